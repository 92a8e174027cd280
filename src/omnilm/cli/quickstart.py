"""`omnilm quickstart`: the main job (`make demo`). The steps live in omnilm.quickstart."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omnilm.cli.common import add_command

EXAMPLE = """example:
  omnilm quickstart --out runs/quickstart                 # ~18 min on 2 CPU cores; re-run to resume
  omnilm quickstart --out runs/qs-seed1 --seed 1          # another sample order and LoRA initialisation
  omnilm quickstart --budget-minutes 10                   # fewer training steps
  omnilm quickstart --recipe native --out runs/qs-native  # hears speech natively, watches video (not yet measured)
  omnilm quickstart --tiny                                # a tiny random model, seconds (the pipeline only)"""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "quickstart", run, epilog=EXAMPLE,
        help="the main job: train, evaluate and save an image + speech + text model (what `make demo` runs)",
        description="Set up packaged weights, build easy-VQA (typed and spoken), train DINOv2-S + Qwen2.5-0.5B "
                    "connectors with LoRA on the CPU, evaluate, answer live examples, save. Interrupted, it resumes.")
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="scale the training steps to this whole-run budget (the recipe's is 20)")
    parser.add_argument("--recipe", default=None,
                        help="recipe YAML, or a shipped recipe's name: quickstart (the default, omnilm/recipes/"
                             "quickstart.yaml; speech through Whisper's transcript) or native (speech as audio tokens "
                             "with distillation, and video)")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed: sample order and LoRA initialisation (default: the recipe's, 0)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model demo instead (no training)")
    parser.set_defaults(log_file=log_file)


def log_file(args: argparse.Namespace) -> Path | None:
    """Where the details go (the console keeps the progress bars, results and warnings)."""
    return None if args.tiny else Path(args.out) / "quickstart.log"


def run(args: argparse.Namespace) -> int:
    if args.tiny:
        from omnilm.demo import tiny_demo

        for line in tiny_demo(args.out):
            print(line)
        return 0
    from omnilm.quickstart import load_recipe, results_table, run_quickstart, timings_table, video_table

    summary = run_quickstart(args.out, load_recipe(args.recipe, args.budget_minutes, args.seed))
    print("\neasy-VQA test (a fixed seeded sample), VQA accuracy:\n" + results_table(summary["results"]))
    if "video" in summary["results"]:
        print("\n" + video_table(summary["results"]["video"]))
    heard = summary["results"].get("spoken", {}).get("heard")
    if heard:
        print(f"\nwhat the model says it heard before answering ({heard['items']} spoken test questions): "
              f"word error rate {100 * heard['wer']:.1f}%, exact {100 * heard['exact']:.1f}%")
    if summary["align"] and "wer" in summary["align"]:
        align = summary["align"]
        print(f"\naudio alignment ({align['steps']} steps, audio connector alone): 'What did I say?' on "
              f"{align['items']} held-out-voice clips, word error rate {100 * align['wer']:.1f}%, "
              f"exact {100 * align['exact']:.1f}%")
    if summary["transcript_tune"]:
        tune = summary["transcript_tune"]
        print(f"stage 3 ({tune['steps']} steps): {tune['spoken']} spoken questions answered after their words, "
              f"{tune['typed']} typed")
    if summary["latency"]:
        latency = summary["latency"]
        print(f"\ntime to first token, spoken question ({latency['items']} asked one at a time, median): "
              f"{latency['spoken_ms']:.0f} ms as the model hears it ({latency['audio_mode']})"
              + (f", {latency['cascade_ms']:.0f} ms through Whisper's transcript" if "cascade_ms" in latency else ""))
        if "spoken_answer_ms" in latency:
            print(f"time to the whole reply (the words heard, then the answer): {latency['spoken_answer_ms']:.0f} ms")
    if not summary["speech"]:
        print("(spoken questions skipped: espeak-ng is not installed; `make system-deps` installs it)")
    print("\nlive examples:")
    for example in summary["examples"]:
        print(f"  {example['input']}\n    → {example['answer']!r}"
              + (f"   (Whisper heard: {example['whisper_heard']!r})" if "whisper_heard" in example else ""))
    print("\nsteps:\n" + timings_table(summary["seconds"]))
    for warning in summary["warnings"]:
        print(f"\nwarning: {warning}")
    model = summary["model"]
    print(f"\ntraining curve: {summary['loss_png']}\ndetails: {log_file(args)}\nmodel saved to {model}\n"
          f"  chat:   omnilm chat {model}\n"
          f"  ask:    omnilm generate {model} --prompt 'What shape is this?' --image IMAGE.png\n"
          f"  serve:  omnilm serve {model} --port 8000   (OpenAI-compatible API + web page)\n"
          f"  eval:   omnilm eval {model} --task easy-vqa --limit 200")
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0
