"""The native quickstart (`omnilm quickstart --recipe native`) under test.

- robustness: a trained native run's hearing by speech condition (noise, level, tempo, another synthesizer;
  omnilm.data.speech_conditions), native audio tokens against the Whisper cascade on the same items.
- ablations: the recipe's design choices (stack factor 4 vs 8, distillation vs cross-entropy in stage 2, with vs
  without stage 3's transcript-first answers, with vs without the frame-order embedding, with the frame-change
  projection), each a quickstart trained at the same reduced step budget, two at a time (one thread each) beside
  the unchanged recipe.
- video-count, video-all (by name only): probes of the video path. The native recipe's model trained on the
  video questions of its clips alone (cross-entropy, OMNILM_NATIVE_PROBE_STEPS steps, default 300; video-count:
  the count questions only, video-all: all six), then asked the same questions of 50 test clips. In the full
  recipe counting scored 20-36%, under the 40% of always answering "three". OMNILM_NATIVE_PROBE_SET (a JSON
  object of dotted recipe paths → values) changes the model first, e.g. '{"train.model.config.video.
  frame_delta": true}'. Each writes its data, checkpoints and eval to OMNILM_NATIVE_PROBE_DIR/native-PART
  (default runs/).

    OMNILM_NATIVE_RUN=runs/qs-native python bench/run.py bench_native   # the trained run's --out directory
    OMNILM_NATIVE_PARTS=ablations OMNILM_NATIVE_BUDGET=6 python bench/run.py bench_native
    OMNILM_NATIVE_PARTS=video-count OMNILM_NATIVE_PROBE_STEPS=300 python bench/run.py bench_native
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

ROBUSTNESS_ITEMS = 100  # spoken test questions per condition (the first of the run's typed eval sample)
ABLATIONS = {  # name → recipe overrides (dotted paths) on top of the native recipe
    "native": {},
    "stack-4": {"train.model.config.audio.stack_factor": 4},
    "cross-entropy": {"train.stage.loss": {"type": "cross_entropy"}},  # stage 2 without distillation
    "no-stage-3": {"transcript_tune": None},  # one-word spoken answers, as stage 2 leaves them
    "no-frame-order": {"train.model.config.video.frame_order": False},
    "frame-delta": {"train.model.config.video.frame_delta": True},  # what changed since the previous frame
}
VIDEO_PROBES = {"video-count": ("video-count",), "video-all": None}  # part → question categories (None: all)
ABLATION_EVAL = {"eval.limit": 300, "eval.spoken_limit": 200, "eval.latency_items": 0, "eval.cascade": False}
PARALLEL = 2


def run() -> dict:
    parts = os.environ.get("OMNILM_NATIVE_PARTS", "robustness,ablations").split(",")
    results = {}
    if "robustness" in parts:
        results["robustness"] = robustness(Path(os.environ.get("OMNILM_NATIVE_RUN", "runs/qs-native")))
    if "ablations" in parts:
        results["ablations"] = ablations(Path(os.environ.get("OMNILM_NATIVE_ABLATIONS", "runs/native-ablations")),
                                         budget=float(os.environ.get("OMNILM_NATIVE_BUDGET", "6")))
    for part, categories in VIDEO_PROBES.items():
        if part in parts:
            results[part.replace("-", "_")] = video_probe(
                Path(os.environ.get("OMNILM_NATIVE_PROBE_DIR", "runs")) / f"native-{part}", categories=categories,
                steps=int(os.environ.get("OMNILM_NATIVE_PROBE_STEPS", "300")),
                clips=int(os.environ.get("OMNILM_NATIVE_PROBE_CLIPS", "1500")),
                overrides=json.loads(os.environ.get("OMNILM_NATIVE_PROBE_SET", "{}")))
    return results


def video_probe(root: Path, *, categories: tuple[str, ...] | None, steps: int, clips: int, test_clips: int = 50,
                overrides: dict | None = None) -> dict:
    """The native recipe's model (with ``overrides``, dotted recipe paths → values) trained ``steps`` steps on the
    video questions of ``categories`` (None: all) of ``clips`` training clips only, then asked those of
    ``test_clips`` test clips: accuracy, by category, and what it answered."""
    import collections

    from omnilm import load
    from omnilm.data.records import read_jsonl, write_jsonl
    from omnilm.evaluation import evaluate
    from omnilm.evaluation.tasks import load_task
    from omnilm.quickstart import load_recipe, train_extra_stage, video_records
    from omnilm.training.config import LossSection

    overrides = overrides or {}
    recipe = load_recipe(_native_recipe_with(overrides, root / "recipe.yaml"))
    data = root / "data"
    questions = {}
    for split, count in (("train", clips), ("test", test_clips)):
        rows = video_records(data, split, count, recipe.answer_suffix if split == "train" else "")
        questions[split] = [r for r in rows if categories is None or r["category"] in categories]
        write_jsonl(data / f"probe-{split}.jsonl", questions[split])
    config = recipe.train
    stage = dataclasses.replace(config.stage, loss=LossSection(type="cross_entropy"))
    final = train_extra_stage(config, stage, steps, config.optim.lr, str(data / "probe-train.jsonl"), root / "train")
    task = dataclasses.replace(load_task("easy-vqa-video"), data=data / "probe-test.jsonl", dataset=None)
    result = evaluate(load(final), task, root / "eval", batch_size=16)
    answers = collections.Counter(row.get("prediction") for row in read_jsonl(root / "eval" / "predictions.jsonl"))
    return {"steps": steps, "overrides": overrides, "train_questions": len(questions["train"]),
            "accuracy": result["metrics"], "by_category": {c: r["vqa_accuracy"] for c, r in result["by_category"].items()},
            "answers": dict(answers.most_common(6))}


def robustness(run_dir: Path, items: int = ROBUSTNESS_ITEMS) -> dict:
    """Accuracy by speech condition, native and cascade, on the run's first `items` typed eval questions."""
    from omnilm import load
    from omnilm.data.spoken import build_spoken
    from omnilm.data.speech_conditions import CONDITIONS
    from omnilm.evaluation import evaluate
    from omnilm.evaluation.tasks import load_task
    from omnilm.data.records import read_jsonl, write_jsonl
    from omnilm.quickstart import cascade_records, load_recipe, transcript_first_task

    data_dir, out = run_dir / "data", run_dir / "robustness"
    lm = load(run_dir / "model")
    recipe = load_recipe("native")
    instruction = recipe.answer_suffix.strip()
    source = out / "source" / "eval-typed.jsonl"  # media paths relative to data_dir, as build_spoken wants
    write_jsonl(source, read_jsonl(data_dir / "eval-typed.jsonl")[:items])
    table = {}
    for name in CONDITIONS:
        built = build_spoken(source, out / name, split="test", media_root=data_dir, condition=name)
        spoken = Path(built["files"][source.name])  # its media paths are relative to its own directory
        native = dataclasses.replace(load_task("easy-vqa-spoken"), data=spoken, dataset=None, prompt=instruction)
        native = transcript_first_task(native) if recipe.transcript_first else native
        heard = evaluate(lm, native, out / name / "native", batch_size=16)
        typed = Path(cascade_records(lm, spoken, out / name / "cascade.jsonl", None))
        cascade = evaluate(lm, dataclasses.replace(load_task("easy-vqa"), data=typed, dataset=None),
                           out / name / "cascade", batch_size=16)
        table[name] = {"items": heard["num_items"], "native": heard["metrics"]["vqa_accuracy"],
                       "cascade": cascade["metrics"]["vqa_accuracy"]}
        logger.info("%s: native %.3f, cascade %.3f", name, table[name]["native"], table[name]["cascade"])
    return {"run": str(run_dir), "conditions": table}


def ablations(root: Path, *, budget: float) -> dict:
    """Each variant's quickstart at `budget` minutes of the recipe's steps, PARALLEL at a time; their tables."""
    pending = []
    for name, overrides in ABLATIONS.items():
        path = _native_recipe_with({**overrides, **ABLATION_EVAL}, root / f"{name}.yaml")
        command = [sys.executable, "-m", "omnilm.cli.main", "quickstart", "--recipe", str(path), "--out",
                   str(root / name), "--budget-minutes", str(budget)]
        pending.append((name, command))
    running, done = [], {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < PARALLEL:
            name, command = pending.pop(0)
            log = (root / f"{name}.log").open("w")
            logger.info("ablation %s: %s", name, " ".join(command))
            running.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        name, process, log = running.pop(0)
        process.wait()
        log.close()
        summary = root / name / "summary.json"
        done[name] = json.loads(summary.read_text()) if summary.is_file() else {"error": f"exit {process.returncode}"}
    return {"budget_minutes": budget, "variants": {name: _headline(s) for name, s in done.items()}}


def _native_recipe_with(overrides: dict, path: Path) -> Path:
    """The native recipe with ``overrides`` (dotted paths → values), written to ``path``."""
    from omnilm.quickstart import default_recipe

    tree = yaml.safe_load(default_recipe("native").read_text())
    for dotted, value in overrides.items():
        _set(tree, dotted, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _headline(summary: dict) -> dict:
    """Accuracy of each eval kind (and the video order questions) and the run's seconds, from summary.json."""
    if "error" in summary:
        return summary
    from omnilm.data.easy_vqa_video import ORDER_CATEGORIES

    out = {kind: r["metrics"]["vqa_accuracy"] for kind, r in summary["results"].items()}
    video = summary["results"].get("video")
    if video:
        by = video["by_category"]
        count = sum(by[c]["count"] for c in ORDER_CATEGORIES if c in by)
        out["video-order"] = sum(by[c]["vqa_accuracy"] * by[c]["count"] for c in ORDER_CATEGORIES if c in by) / count
    out["seconds"] = summary.get("seconds")
    return out
