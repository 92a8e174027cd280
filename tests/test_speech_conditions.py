"""Speech conditions (omnilm.data.speech_conditions): training augmentation and robustness test sets."""

import json
from pathlib import Path

import numpy as np
import pytest

from omnilm.data.speech_conditions import (
    CONDITIONS,
    FLITE_TEST_VOICE,
    FLITE_TRAIN_VOICES,
    Condition,
    add_noise,
    apply,
    augmentation,
    change_level,
    change_speed,
)


def tone(seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_noise_is_added_at_the_asked_signal_to_noise_ratio():
    clean = tone()
    noisy = add_noise(clean, 10.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 0.3


def test_level_scales_and_clips_and_speed_changes_the_length():
    clean = tone()
    assert np.allclose(change_level(clean, -20.0), clean * 0.1, atol=1e-6)
    assert change_level(clean, 20.0).max() == 1.0  # 0.3 × 10 clipped at full scale
    assert len(change_speed(clean, 1.25)) == 12_800 and len(change_speed(clean, 0.8)) == 20_000
    assert np.array_equal(apply(clean, CONDITIONS["clean"], np.random.default_rng(0)), clean)


def test_augmentation_is_deterministic_per_clip_and_varies_across_clips():
    assert augmentation("r1|0") == augmentation("r1|0")
    drawn = [augmentation(f"r{i}|0") for i in range(200)]
    assert len({d.gain_db for d in drawn}) == 200
    assert 60 < sum(d.snr_db is not None for d in drawn) < 140  # noise on about half
    assert all(0.85 <= d.speed <= 1.2 and -18 <= d.gain_db <= 6 for d in drawn)
    assert all(d.synthesizer == "espeak-ng" and d.flite_voice is None for d in drawn)  # espeak-ng only by default
    mixed = [augmentation(f"r{i}|0", flite_share=0.2, fastest=1.3) for i in range(200)]
    flite = [d for d in mixed if d.synthesizer == "flite"]
    assert 20 < len(flite) < 60  # about a fifth
    assert {d.flite_voice for d in flite} == set(FLITE_TRAIN_VOICES)  # training never hears the test voice
    assert FLITE_TEST_VOICE not in FLITE_TRAIN_VOICES and CONDITIONS["flite"].flite_voice == FLITE_TEST_VOICE
    assert max(d.speed for d in mixed) > 1.25 >= max(d.speed for d in drawn)  # the "fast" set's tempo, covered


@pytest.fixture
def questions(tmp_path):
    source = tmp_path / "test.jsonl"
    rows = [{"id": f"q{i}", "conversations": [{"from": "human", "value": f"is the shape number {i} red?"},
                                              {"from": "gpt", "value": "no"}]} for i in range(2)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return source


@pytest.mark.requires_tool("espeak-ng")
def test_a_condition_changes_every_clip_and_the_clean_set_stays_as_before(questions, tmp_path):
    import soundfile

    from omnilm.data.spoken import build_spoken

    plain = build_spoken(questions, tmp_path / "plain")
    quiet = build_spoken(questions, tmp_path / "quiet", condition="quiet")
    plain_rows, quiet_rows = ([json.loads(x) for x in open(r["files"]["test.jsonl"])] for r in (plain, quiet))
    assert "condition" not in plain_rows[0]["voice"]  # without a condition: the records of before
    assert quiet_rows[0]["voice"]["condition"]["gain_db"] == -20.0
    for a, b in zip(plain_rows, quiet_rows):
        clean, _ = soundfile.read(tmp_path / "plain" / a["audio"][0])
        lowered, _ = soundfile.read(tmp_path / "quiet" / b["audio"][0])
        assert np.allclose(lowered, clean * 0.1, atol=1e-5)
    with pytest.raises(ValueError, match="unknown speech condition 'underwater'"):
        build_spoken(questions, tmp_path / "x", condition="underwater")
    with pytest.raises(ValueError, match="exclude each other"):
        build_spoken(questions, tmp_path / "x", condition="quiet", augment=True)
    with pytest.raises(ValueError, match="flite_share must be in"):
        build_spoken(questions, tmp_path / "x", augment=True, flite_share=1.5)


@pytest.mark.requires_tool("espeak-ng", "flite")
def test_augmented_training_clips_differ_from_clean_ones_and_use_training_voices(questions, tmp_path):
    import soundfile

    from omnilm.data.spoken import TRAIN_VOICES, build_spoken

    clean = build_spoken(questions, tmp_path / "clean", split="train")
    augmented = build_spoken(questions, tmp_path / "aug", split="train", augment=True, flite_share=0.5)
    rows = [json.loads(x) for x in open(augmented["files"]["test.jsonl"])]
    assert {r["voice"]["voice"] for r in rows} <= set(TRAIN_VOICES)
    clean_rows = [json.loads(x) for x in open(clean["files"]["test.jsonl"])]
    for a, b in zip(clean_rows, rows):
        x, _ = soundfile.read(tmp_path / "clean" / a["audio"][0])
        y, _ = soundfile.read(tmp_path / "aug" / b["audio"][0])
        condition = b["voice"]["condition"]
        if condition["synthesizer"] == "flite":  # another synthesizer: another length, a training voice
            assert condition["flite_voice"] in FLITE_TRAIN_VOICES and not np.array_equal(x[: len(y)], y[: len(x)])
        else:
            assert len(y) == pytest.approx(len(x) / condition["speed"], abs=2)


@pytest.mark.requires_tool("flite")
def test_flite_speaks_text_given_as_data(questions, tmp_path):
    import soundfile

    from omnilm.data.spoken import synthesize

    path = tmp_path / "flite.wav"
    synthesize("-o /tmp/owned; is the shape red?", path, voice="en-us", speed=175, pitch=50,
               condition=Condition(synthesizer="flite"))
    samples, rate = soundfile.read(path)
    assert rate == 16_000 and len(samples) / rate > 1.0
    assert not Path("/tmp/owned").exists()  # the text was never read as options
    other = tmp_path / "slt.wav"
    synthesize("is the shape red?", other, voice="en-us", speed=175, pitch=50,
               condition=Condition(synthesizer="flite", flite_voice="slt"))
    shorter, _ = soundfile.read(other)
    assert not np.array_equal(shorter, samples[: len(shorter)])  # another voice, another clip


@pytest.mark.requires_tool("espeak-ng")
def test_espeak_speaks_a_text_that_looks_like_an_option(tmp_path):
    import soundfile

    from omnilm.data.easy_vqa import speak

    path = tmp_path / "dash.wav"
    speak("-w /tmp/omnilm-owned.wav is the shape red?", "en-us", path)
    samples, _ = soundfile.read(path)
    assert len(samples) > 0 and not Path("/tmp/omnilm-owned.wav").exists()  # spoken, not taken as -w FILE
