"""`omnilm train` on a generated audio task: the pitch band of a tone, stage 1 then stage 2 (LoRA).

The tiny Whisper encoder is random, so the stage-1 recipe trains it too (`stage.audio: full`); its
weights then travel in the checkpoint (`trained_parts`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnilm.data.toy import build_tones
from train_helpers import accuracy, run_train


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return Path(build_tones(tmp_path_factory.mktemp("tones"), train=240, test=60, seed=1)["dir"])


@pytest.fixture(scope="module")
def stage1(tones, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stage1"
    return run_train("tiny-audio.yaml", out, f"data.train={tones / 'train.jsonl'}",
                     f"data.eval={tones / 'test.jsonl'}", f"feature_cache.dir={out.parent / 'features'}")


def test_stage1_learns_the_pitch_of_unseen_tones(stage1, tones):
    assert accuracy(stage1 / "final", tones / "test.jsonl") >= 0.95
    assert (stage1 / "loss.png").is_file()
    config = json.loads((stage1 / "final" / "omnilm.json").read_text())
    assert "audio" in config["trained_parts"]


def test_stage2_lora_keeps_or_improves(stage1, tones):
    out = run_train("tiny-audio-lora.yaml", stage1.parent / "stage2", f"model.checkpoint={stage1 / 'final'}",
                    f"data.train={tones / 'train.jsonl'}", f"data.eval={tones / 'test.jsonl'}",
                    f"feature_cache.dir={stage1.parent / 'features'}")
    before = accuracy(stage1 / "final", tones / "test.jsonl")
    after = accuracy(out / "final", tones / "test.jsonl")
    assert after >= 0.95 and after >= before - 0.02, (before, after)
    assert (out / "loss.png").is_file()
