"""Text-to-speech distillation (omnilm.training.distill, `stage.loss.type: distill`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnilm.data.records import read_records
from omnilm.data.toy import build_tones
from omnilm.errors import ConfigError
from omnilm.training.config import TrainConfig
from omnilm.training.distill import DistillObjective, distillation_loss, text_twin
from train_helpers import run_train


def test_distillation_loss_is_the_hand_computed_kl_and_zero_for_equal_distributions():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    for temperature in (1.0, 2.0):
        expected = 0.0
        for t_row, s_row in zip(teacher.tolist(), student.tolist()):
            p = [math.exp(x / temperature) for x in t_row]
            q = [math.exp(x / temperature) for x in s_row]
            p, q = [x / sum(p) for x in p], [x / sum(q) for x in q]
            expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        assert distillation_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(teacher, teacher + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # same softmax


def test_the_text_twin_replaces_each_clip_by_its_words():
    messages = [{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "audio", "audio": "q.wav"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    twin = text_twin(messages, ["what colour is it?"])
    assert twin[0]["content"] == [{"type": "image", "image": "a.png"}, {"type": "text", "text": "what colour is it?"}]
    assert twin[1] == messages[1]
    assert text_twin(messages[1:], []) is None  # nothing spoken: no teacher
    with pytest.raises(ValueError, match="1 audio part.*2 spoken_text"):
        text_twin(messages, ["a", "b"])


@pytest.fixture(scope="module")
def spoken_tones(tmp_path_factory):
    """Tone clips whose `spoken_text` names their pitch band, plus typed records asking the same."""
    out = Path(build_tones(tmp_path_factory.mktemp("tones"), train=48, test=8, seed=3)["dir"])
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    spoken = [{**r, "spoken_text": [f"the tone is {r['conversations'][1]['value']}"]} for r in rows[:32]]
    typed = [{"id": f"typed-{r['id']}", "conversations": [
        {"from": "human", "value": f"the tone is {r['conversations'][1]['value']}"}, r["conversations"][1]]}
        for r in rows[32:]]
    (out / "distill.jsonl").write_text("".join(json.dumps(r) + "\n" for r in spoken + typed))
    return out


def test_the_objective_adds_kl_to_the_typed_twin_on_spoken_records_and_cross_entropy_elsewhere(spoken_tones):
    cfg = TrainConfig.from_dict({"model": {"tiny": ["audio"]}, "data": {"train": str(spoken_tones / "distill.jsonl")},
                                 "stage": {"loss": {"type": "distill", "temperature": 2.0, "ce_weight": 0.5}},
                                 "feature_cache": {"enabled": False}, "optim": {"batch_size": 4}})
    objective = DistillObjective(cfg, world=1, rank=0)
    lm = objective.build(torch.device("cpu"))
    lm.model.eval()  # no dropout: the two computations below must agree exactly
    objective.train_mode = lambda: None
    rows = [objective.train_data.dataset[i] for i in (0, 1, 40, 41)]  # two spoken, two typed
    batch = objective.prepare(objective.train_data.collator(rows), torch.device("cpu"))
    got = objective.loss(lm.model, batch)

    records = read_records(spoken_tones / "distill.jsonl")
    by_where = {f"{spoken_tones / 'distill.jsonl'}:{r.line}": r for r in records}
    expected = torch.tensor(0.0)
    for row in rows:
        record = by_where[row["where"]]
        student_logits, targets = answer_logits(lm, record.messages)
        ce = F.cross_entropy(student_logits, targets, reduction="sum")
        twin = text_twin(record.messages, record.fields.get("spoken_text") or [])
        if twin is None:
            expected = expected + ce
        else:
            teacher_logits, _ = answer_logits(lm, twin)
            expected = expected + 0.5 * ce + distillation_loss(student_logits, teacher_logits, 2.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def answer_logits(lm, messages):
    """Logits and targets at one conversation's assistant tokens, computed on its own."""
    inputs = lm.processor([messages], return_labels=True, padding_side="right")
    labels = inputs.pop("labels")
    logits = lm.model(**inputs).logits[0, :-1]  # (L-1, V)
    targets = labels[0, 1:]
    keep = targets != -100
    return logits[keep].float(), targets[keep]


def test_omnilm_train_with_distillation_brings_the_student_towards_the_teacher(spoken_tones, tmp_path):
    out = run_train("tiny-audio.yaml", tmp_path / "run", f"data.train={spoken_tones / 'distill.jsonl'}", "data.eval=null",
                    "stage.loss.type=distill", "optim.epochs=6", "optim.batch_size=8", "save_every=null",
                    "eval_every=null", f"feature_cache.dir={tmp_path / 'features'}")
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 36 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses


def test_distillation_settings_are_checked():
    base = {"model": {"tiny": ["audio"]}, "data": {"train": "x.jsonl"}}
    with pytest.raises(ConfigError, match="stage.loss.type"):
        TrainConfig.from_dict({**base, "stage": {"loss": {"type": "kl"}}})
    with pytest.raises(ConfigError, match="stage.loss.temperature"):
        TrainConfig.from_dict({**base, "stage": {"loss": {"type": "distill", "temperature": 0}}})
    with pytest.raises(ConfigError, match="data.streaming"):
        TrainConfig.from_dict({**base, "stage": {"loss": {"type": "distill"}},
                               "data": {"train": "x.jsonl", "streaming": True}, "optim": {"max_steps": 3}})
