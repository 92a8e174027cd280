"""Shared fixtures: tiny models, generated media files. Everything is local and random."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_tool(*names): skip unless each system tool is installed "
                                       "(`make system-deps` installs espeak-ng, sox, flite, chromium)")


def pytest_collection_modifyitems(config, items):
    """A test marked ``requires_tool("espeak-ng")`` skips, naming the tool, where it is not on PATH."""
    for item in items:
        for marker in item.iter_markers("requires_tool"):
            missing = [name for name in marker.args if shutil.which(name) is None]
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"{', '.join(missing)} not installed "
                                                        "(`make system-deps` installs it)"))


@pytest.fixture(scope="session")
def tiny_lm():
    from omnilm.testing import tiny_model

    return tiny_model(("image", "audio", "video"))


@pytest.fixture
def red_image() -> Image.Image:
    from omnilm.testing import make_shape_image

    return make_shape_image("red")


@pytest.fixture
def png_bytes(red_image) -> bytes:
    buffer = io.BytesIO()
    red_image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def wav_path(tmp_path):
    import soundfile

    from omnilm.testing import make_tone

    samples, rate = make_tone(1.0)
    path = tmp_path / "tone.wav"
    soundfile.write(path, samples, rate)
    return path


@pytest.fixture(scope="session")
def video_path(tmp_path_factory):
    from omnilm.testing import make_video

    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=8)


def random_image(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
