"""Task harness: `evaluate(model, task, out_dir)` runs a task YAML on a model (or an OpenAI-compatible
endpoint), saves predictions as they come (resumable) and writes results.json, report.md and a
confusion-matrix PNG."""

from omnilm.evaluation.endpoint import EndpointModel
from omnilm.evaluation.runner import evaluate
from omnilm.evaluation.tasks import Task, TaskError, benchmark_tasks, builtin_tasks, load_task

__all__ = ["EndpointModel", "Task", "TaskError", "benchmark_tasks", "builtin_tasks", "evaluate", "load_task"]
