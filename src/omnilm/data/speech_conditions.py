"""Speech under other conditions: background noise, level, tempo, another synthesizer.

Used two ways: ``augment`` varies training clips (drawn deterministically per clip, so a rebuild writes the
same files), and ``CONDITIONS`` are the robustness test sets (`omnilm data spoken SRC OUT --condition NAME`),
each one change from a clean clip spoken by a held-out espeak-ng voice.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLITE_INSTALL_HINT = "flite is not installed; `make system-deps` installs it (or `apt-get install -y flite`)"
FLITE_TEST_VOICE = "kal"  # flite's default (diphone) voice: the robustness set's, never heard in training
FLITE_TRAIN_VOICES = ("slt", "rms", "awb")  # flite's built-in voices heard in training (statistical, not diphone)
SLOWEST_TEMPO, FASTEST_TEMPO = 0.85, 1.2  # the training augmentation's tempo range (its top end a setting)


@dataclass(frozen=True)
class Condition:
    """One change applied to a clean clip: white noise at ``snr_db``, a level change of ``gain_db`` (clipped
    to full scale), a tempo ``speed`` factor (resampled: pitch moves with it), or ``synthesizer`` flite with its
    ``flite_voice`` (None: the test voice)."""

    snr_db: float | None = None
    gain_db: float = 0.0
    speed: float = 1.0
    synthesizer: str = "espeak-ng"
    flite_voice: str | None = None


CONDITIONS: dict[str, Condition] = {
    "clean": Condition(),
    "noise-20db": Condition(snr_db=20.0),
    "noise-10db": Condition(snr_db=10.0),
    "quiet": Condition(gain_db=-20.0),
    "loud": Condition(gain_db=12.0),
    "fast": Condition(speed=1.25),
    "slow": Condition(speed=0.8),
    "flite": Condition(synthesizer="flite", flite_voice=FLITE_TEST_VOICE),
}


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` (S,) plus white noise whose power is ``snr_db`` below the clip's own (S,)."""
    power = float(np.mean(samples.astype(np.float64) ** 2)) or 1e-10
    noise = rng.standard_normal(samples.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (samples + noise).astype(np.float32)


def change_level(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """``samples`` (S,) scaled by ``gain_db``, clipped to [-1, 1] as a recorder would."""
    return np.clip(samples * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """``samples`` (S,) played ``factor`` times faster (S / factor,), by linear interpolation."""
    length = max(1, round(len(samples) / factor))
    return np.interp(np.linspace(0, len(samples) - 1, length), np.arange(len(samples)), samples).astype(np.float32)


def apply(samples: np.ndarray, condition: Condition, rng: np.random.Generator) -> np.ndarray:
    """``condition``'s noise, level and tempo applied to a mono clip (the synthesizer is chosen before)."""
    if condition.speed != 1.0:
        samples = change_speed(samples, condition.speed)
    if condition.gain_db:
        samples = change_level(samples, condition.gain_db)
    if condition.snr_db is not None:
        samples = add_noise(samples, condition.snr_db, rng)
    return samples


def augmentation(seed: str, flite_share: float = 0.0, fastest: float = FASTEST_TEMPO) -> Condition:
    """The training augmentation of one clip, drawn from ``seed``: noise at 10-35 dB SNR on half the clips,
    a level between -18 and +6 dB, a tempo between 0.85 and ``fastest``, and on ``flite_share`` of the clips
    flite with one of its training voices (never the test voice) instead of espeak-ng."""
    rng = random.Random(seed)
    snr = rng.uniform(10, 35) if rng.random() < 0.5 else None
    gain, speed = rng.uniform(-18, 6), rng.uniform(SLOWEST_TEMPO, fastest)
    if flite_share and rng.random() < flite_share:
        return Condition(snr_db=snr, gain_db=gain, speed=speed, synthesizer="flite",
                         flite_voice=rng.choice(FLITE_TRAIN_VOICES))
    return Condition(snr_db=snr, gain_db=gain, speed=speed)


def flite_speak(text: str, path: Path, voice: str = FLITE_TEST_VOICE) -> None:
    """``text`` spoken by flite's ``voice`` into the WAV ``path``; the text goes in a file, never argv."""
    binary = shutil.which("flite")
    if binary is None:
        raise RuntimeError(FLITE_INSTALL_HINT)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        handle.write(text)
    try:
        result = subprocess.run([binary, "-voice", voice, "-f", handle.name, "-o", str(path)], check=False,
                                capture_output=True, text=True, timeout=120)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"flite failed: {result.stderr.strip() or result.returncode}")
