"""Reproduce docs/connectors.md: every connector (and gated cross-attention) trained for the same CPU time on easy-vqa.

    OMP_NUM_THREADS=1 .venv/bin/python bench/connectors_easy_vqa.py            # the documented run
    OMP_NUM_THREADS=1 .venv/bin/python bench/connectors_easy_vqa.py --budget 20 --runs linear,perceiver-8  # smoke

Parts: `pkg:dinov2-small` (frozen, 56 px → 4×4 = 16 patch tokens, CLS dropped) and `pkg:gemma-3-270m`
(the packaged base LLM, frozen, float32). Only the connector (and, for gated_xattn, the cross-attention
blocks) trains. DINOv2 features of every image used are computed once, before any run, and reused, as
omnilm's feature cache does for frozen encoders; so a run's budget is spent on the connector + LLM only.

Fairness: each run gets `--budget` seconds of *process CPU time* (time.process_time(), one torch thread)
for its training steps, batch building included; evaluations and model loading are not counted. Every
run sees the same batches in the same order (seed), the same optimiser settings and the same eval items.

Accuracy is greedy next-token accuracy on the answer: the prompt is the user turn (image + question) and
the model's argmax token after "Assistant:" is compared with the answer. Every easy-vqa answer is one
Gemma token, so this equals the first word of greedy generation.

Writes docs/connectors_results.json, docs/connectors_table.md and docs/connectors.png (and per-step
losses in runs/connectors/RUN.jsonl).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SIZE = 56  # easy-vqa images are 64 px; DINOv2 (patch 14) interpolates its positions: 4×4 patches

# run name → model config overrides. Token counts follow from the config (the processor's layout).
RUNS = {
    "linear": {"connectors": {"image": {"type": "linear"}}},
    "mlp": {"connectors": {"image": {"type": "mlp"}}},
    "resblock": {"connectors": {"image": {"type": "resblock"}}},
    "perceiver-8": {"connectors": {"image": {"type": "perceiver", "options": {"num_latents": 8}}}},
    "perceiver-4": {"connectors": {"image": {"type": "perceiver", "options": {"num_latents": 4}}}},
    "qformer-8": {"connectors": {"image": {"type": "qformer", "options": {"num_queries": 8}}}},
    "gated_xattn": {"connectors": {"image": {"type": "mlp"}},
                    "fusion": {"mode": "gated_xattn", "every": 6, "heads": 8, "ff_mult": 4}},
}
CATEGORIES = ("shape", "color", "yesno")


def base_config(run: str) -> dict:
    return {
        "llm": {"source": "pkg:gemma-3-270m", "dtype": "float32"},
        "vision": {"source": "pkg:dinov2-small", "image_size": IMAGE_SIZE, "pooling": "none", "drop_cls": True},
        **copy.deepcopy(RUNS[run]),
    }


def load_split(data_dir: Path, split: str) -> list[dict]:
    rows = []
    for line in (data_dir / f"{split}.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append({"image": str(data_dir / r["image"]), "question": r["conversations"][0]["value"].split("\n", 1)[1],
                     "answer": r["conversations"][1]["value"], "category": r["category"]})
    return rows


def conversation(row: dict, with_answer: bool) -> list[dict]:
    conv = [{"role": "user", "content": [{"type": "image", "image": row["image"]},
                                         {"type": "text", "text": row["question"]}]}]
    if with_answer:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]})
    return conv


def features_for(rows: list[dict], feats: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([feats[r["image"]] for r in rows])  # (B, T, C)


@torch.no_grad()
def evaluate(model, processor, rows: list[dict], feats: dict, batch_size: int = 32) -> dict[str, float]:
    model.eval()
    correct = {c: 0 for c in CATEGORIES}
    total = {c: 0 for c in CATEGORIES}
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        batch = processor([conversation(r, False) for r in chunk], padding_side="left")
        batch.pop("pixel_values", None)
        logits = model(**batch, image_features=features_for(chunk, feats), logits_to_keep=1).logits[:, -1]
        for row, token in zip(chunk, logits.argmax(-1).tolist()):
            guess = processor.tokenizer.decode([token]).strip().lower()
            correct[row["category"]] += guess == row["answer"]
            total[row["category"]] += 1
    model.train()
    out = {c: correct[c] / total[c] for c in CATEGORIES if total[c]}
    out["all"] = sum(correct.values()) / sum(total.values())
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=140.0, help="CPU seconds of training per run")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {list(RUNS)}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=10, help="linear warmup steps, then constant")
    parser.add_argument("--train-questions", type=int, default=4000, help="seeded sample of the train split")
    parser.add_argument("--eval-per-category", type=int, default=100, help="final eval: N per category")
    parser.add_argument("--probe-per-category", type=int, default=40, help="eval at 1/3 and 2/3 of the budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="easy-vqa directory (default: omnilm's task data root)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the table, plot and JSON go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from omnilm.config import OmniConfig
    from omnilm.data.easy_vqa import build_easy_vqa
    from omnilm.evaluation.tasks import data_root
    from omnilm.lm import OmniLM
    from omnilm.model import OmniModel
    from omnilm.processor import IGNORE_INDEX, OmniProcessor

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
    data_dir = Path(args.data) if args.data else data_root() / "easy-vqa"
    if not (data_dir / "train.jsonl").is_file() or not (data_dir / "test.jsonl").is_file():
        build_easy_vqa(data_dir, splits=("train", "test"))
    rng = random.Random(args.seed)
    train = load_split(data_dir, "train")
    rng.shuffle(train)
    train = train[: args.train_questions]
    test = load_split(data_dir, "test")
    rng.shuffle(test)
    eval_rows = [r for c in CATEGORIES for r in [t for t in test if t["category"] == c][: args.eval_per_category]]
    probe_rows = [r for c in CATEGORIES
                  for r in [t for t in eval_rows if t["category"] == c][: args.probe_per_category]]

    # The frozen parts, loaded once; DINOv2 features of every image used, computed once.
    first = OmniLM.from_config(OmniConfig.from_dict(base_config(runs[0])))
    vision, base_llm = first.model.vision, first.model.llm
    base_llm.requires_grad_(False)
    started = time.process_time()
    feats: dict[str, torch.Tensor] = {}
    images = sorted({r["image"] for r in train + eval_rows})
    with torch.no_grad():
        for i in range(0, len(images), 64):
            chunk = images[i : i + 64]
            convs = [conversation({"image": p, "question": "?"}, False) for p in chunk]
            pixels = first.processor(convs)["pixel_values"]
            for path, f in zip(chunk, vision(pixels)):
                feats[path] = f.clone()  # (T, C)
    feature_seconds = time.process_time() - started
    print(f"features: {len(images)} images → {tuple(next(iter(feats.values())).shape)} each, "
          f"{feature_seconds:.1f} CPU s", flush=True)

    log_dir = ROOT / "runs" / "connectors"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for run in runs:
        config = OmniConfig.from_dict(base_config(run))
        processor = OmniProcessor.from_config(config)
        torch.manual_seed(args.seed)  # the connector's initial weights
        model = OmniModel(config, llm=copy.deepcopy(base_llm), placeholder_ids=processor.placeholder_ids,
                          vision=vision)
        params = [p for n, p in model.named_parameters()
                  if n.startswith(("connectors.", "fusion.")) and p.requires_grad]
        model.llm.requires_grad_(False)
        model.train()
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / args.warmup))
        order = torch.Generator().manual_seed(args.seed)
        tokens_per_image = processor.layout.image_tokens
        record = {"run": run, "connector": config.connectors["image"].type,
                  "options": config.connectors["image"].options, "fusion": config.fusion.mode,
                  "tokens_per_image": tokens_per_image,
                  "trainable_params": sum(p.numel() for p in params), "curve": [], "losses": []}
        print(f"[{run}] tokens/image {tokens_per_image}, trainable {record['trainable_params']:,}", flush=True)
        spent, step, epoch_pos, perm = 0.0, 0, 0, torch.randperm(len(train), generator=order).tolist()
        probes = [args.budget / 3, 2 * args.budget / 3]
        losses = []
        while spent < args.budget:
            t0 = time.process_time()
            if epoch_pos + args.batch_size > len(perm):
                perm, epoch_pos = torch.randperm(len(train), generator=order).tolist(), 0
            rows = [train[i] for i in perm[epoch_pos : epoch_pos + args.batch_size]]
            epoch_pos += args.batch_size
            batch = processor([conversation(r, True) for r in rows], return_labels=True, padding_side="right")
            batch.pop("pixel_values", None)
            labels = batch.pop("labels")
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # token t predicts t+1
            keep = targets != IGNORE_INDEX
            logits = model(**batch, image_features=features_for(rows, feats), logits_to_keep=keep).logits.float()
            loss = torch.nn.functional.cross_entropy(logits, targets[keep])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            spent += time.process_time() - t0
            losses.append(loss.item())
            if probes and spent >= probes[0]:
                probes.pop(0)
                acc = evaluate(model, processor, probe_rows, feats)
                record["curve"].append({"step": step, "cpu_s": round(spent, 1), "n": len(probe_rows), **acc})
                print(f"[{run}] step {step} ({spent:.0f} CPU s): loss {sum(losses[-20:]) / len(losses[-20:]):.3f}, "
                      f"probe acc {acc['all']:.3f}", flush=True)
        e0 = time.process_time()
        final = evaluate(model, processor, eval_rows, feats)
        final_probe = evaluate(model, processor, probe_rows, feats)
        record["curve"].append({"step": step, "cpu_s": round(spent, 1), "n": len(probe_rows), **final_probe})
        gates = {n: round(float(p.detach().tanh()), 4) for n, p in model.named_parameters() if n.endswith("_gate")}
        record.update(steps=step, cpu_s=round(spent, 1), s_per_step=round(spent / step, 3),
                      samples=step * args.batch_size, final=final, eval_cpu_s=round(time.process_time() - e0, 1),
                      gates=gates or None)
        record["losses"] = [round(x, 4) for x in losses]
        (log_dir / f"{run}.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": x}) + "\n"
                                                      for i, x in enumerate(record["losses"])))
        print(f"[{run}] {step} steps in {spent:.0f} CPU s; final acc {final}", flush=True)
        results.append(record)
        del model, optimizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"settings": {**vars(args), "image_size": IMAGE_SIZE, "train_questions": len(train),
                            "train_images": len({r['image'] for r in train}), "eval_items": len(eval_rows),
                            "probe_items": len(probe_rows), "feature_cpu_s": round(feature_seconds, 1),
                            "torch": torch.__version__, "budget_clock": "time.process_time, 1 torch thread"},
               "results": results}
    (out / "connectors_results.json").write_text(json.dumps(summary, indent=1))
    (out / "connectors_table.md").write_text(table(results, len(eval_rows)))
    plot(results, out / "connectors.png", args.budget)
    print(table(results, len(eval_rows)))
    return 0


def table(results: list[dict], n_eval: int) -> str:
    lines = [f"| run | connector | tokens / image | trainable params | steps in budget | CPU s / step | "
             f"shape | colour | yes/no | all ({n_eval} items) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        f = r["final"]
        kind = r["connector"] + (" + gated_xattn" if r["fusion"] == "gated_xattn" else "")
        tokens = f"{r['tokens_per_image']}" + (" (+16 cross-attended)" if r["fusion"] == "gated_xattn" else "")
        lines.append(f"| {r['run']} | {kind} | {tokens} | {r['trainable_params'] / 1e6:.2f} M | {r['steps']} | "
                     f"{r['s_per_step']:.2f} | {f['shape']:.0%} | {f['color']:.0%} | {f['yesno']:.0%} | "
                     f"**{f['all']:.1%}** |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=80)
    for r in results:
        losses = r["losses"]
        k = 10
        smooth = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
                  for i in range(len(losses))]
        (line,) = axes[0].plot(range(1, len(losses) + 1), smooth, label=r["run"], lw=1.2)
        steps = [c["step"] for c in r["curve"]]
        accs = [c["all"] for c in r["curve"]]
        axes[1].plot(steps, accs, "o-", color=line.get_color(), label=r["run"], ms=4)
        axes[2].scatter([r["tokens_per_image"]], [r["final"]["all"]], color=line.get_color(), s=30)
        axes[2].annotate(r["run"], (r["tokens_per_image"], r["final"]["all"]), fontsize=7,
                         xytext=(3, 3), textcoords="offset points")
    axes[0].set(title="training loss (10-step mean)", xlabel="step", ylabel="answer cross-entropy")
    axes[0].set_yscale("log")
    axes[1].set(title=f"accuracy vs steps ({budget:.0f} CPU s each)", xlabel="step",
                ylabel="probe accuracy (120 items)")
    axes[1].legend(fontsize=7)
    axes[2].set(title="final accuracy vs LLM tokens per image", xlabel="tokens per image (log)",
                ylabel="accuracy (300 items)")
    axes[2].set_xscale("log", base=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
