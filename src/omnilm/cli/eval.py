"""`omnilm eval MODEL --task NAME [--limit N] [--out DIR] [--endpoint URL]`."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from omnilm.cli.common import add_command, add_engine_flags, load_model
from omnilm.errors import OmniError

EXAMPLE = """examples:
  omnilm eval runs/quickstart/model --task easy-vqa --limit 200
  omnilm eval pkg:qwen2.5-0.5b-instruct --task my-task.yaml --out results/qwen
  omnilm eval --endpoint http://127.0.0.1:8000 --task shapes-caption   # any OpenAI-compatible server

  omnilm eval llava-hf/llava-1.5-7b-hf --task vqav2 --limit 500      # a standard benchmark (data from the hub)

Offline tasks: easy-vqa, easy-vqa-spoken, easy-vqa-video, shapes-caption. Standard benchmarks (VQAv2, GQA,
TextVQA, POPE, MME, ScienceQA-IMG, MMMU, ChartQA, DocVQA, COCO/NoCaps/Flickr30k captions and retrieval,
LibriSpeech, MVBench): docs/benchmarks.md. An interrupted run resumes from OUT/predictions.jsonl when
started again with the same --out."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "eval", run, help="measure a model on a task (VQA accuracy, caption metrics, ...)", epilog=EXAMPLE,
        description="Run a task (built-in name or task YAML) on a model or an OpenAI-compatible endpoint and "
        "write predictions.jsonl, results.json, report.md and a confusion matrix to --out.")
    parser.add_argument("model", nargs="?", help="checkpoint directory, hub id or pkg: reference; with --endpoint, "
                        "the served model's name (default: the first one the server lists)")
    parser.add_argument("--task", required=True, help="built-in task name or path of a task YAML file")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--out", default=None, help="output directory (default: eval/<task>/<model>)")
    parser.add_argument("--endpoint", default=None, help="base URL of an OpenAI-compatible server")
    parser.add_argument("--api-key", default=None, help="API key for --endpoint")
    parser.add_argument("--batch-size", type=int, default=None, help="items per generation batch (default: task's)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cpu)")
    add_engine_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _default_out(task: str, model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_") or "model"
    return Path("eval") / Path(task).stem / slug


def run(args: argparse.Namespace) -> int:
    from omnilm.evaluation import EndpointModel, evaluate, load_task

    if args.limit is not None and args.limit < 1:
        raise OmniError("--limit must be at least 1")
    task = load_task(args.task)
    if args.endpoint:
        model = EndpointModel(args.endpoint, model=args.model, api_key=args.api_key)
    elif args.model:
        model = load_model(args)
    else:
        raise OmniError("give MODEL (a checkpoint, hub id or pkg: reference) or --endpoint URL")
    out = Path(args.out) if args.out else _default_out(args.task, args.model or args.endpoint)
    results = evaluate(model, task, out, limit=args.limit, batch_size=args.batch_size, progress=not args.no_progress)
    print(f"{task.name} on {results['model']} ({results['num_items']} items)")
    for name, value in results["metrics"].items():
        print(f"  {name:<14} {value:.4f}")
    for name, reason in results["unavailable"].items():
        print(f"  {name:<14} not computed: {reason}")
    print(f"report: {results['files']['report']}")
    return 0
