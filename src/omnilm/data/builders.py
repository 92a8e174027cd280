"""Dataset builders by exact name (`omnilm data NAME OUT_DIR`, and tasks that build their data)."""

from __future__ import annotations

from collections.abc import Callable

from omnilm.data.easy_vqa import build_easy_vqa, build_easy_vqa_spoken
from omnilm.data.easy_vqa_video import build_easy_vqa_video

DATASETS: dict[str, Callable[..., dict]] = {
    "easy-vqa": build_easy_vqa,
    "easy-vqa-spoken": build_easy_vqa_spoken,
    "easy-vqa-video": build_easy_vqa_video,
}


def get_builder(name: str) -> Callable[..., dict]:
    """The builder called ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}") from None
