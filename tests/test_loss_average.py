"""`stage.loss.average`: the token objective averaged over tokens (default) or over records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnilm.data.records import read_records
from omnilm.data.toy import build_tones
from omnilm.errors import ConfigError
from omnilm.training.config import TrainConfig
from omnilm.training.lm_objective import LMObjective
from test_distill import answer_logits


@pytest.fixture(scope="module")
def uneven_answers(tmp_path_factory):
    """Tone records whose answers differ in length: the pitch band alone, or a whole sentence around it."""
    out = Path(build_tones(tmp_path_factory.mktemp("tones"), train=8, test=2, seed=5)["dir"])
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        if i % 2:
            band = row["conversations"][1]["value"]
            row["conversations"][1]["value"] = f"I heard a tone, and I would say its pitch is {band}, quite clearly."
    path = out / "uneven.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("average", ["token", "record"])
def test_the_loss_is_summed_to_be_divided_by_the_tokens_or_the_records(uneven_answers, average):
    cfg = TrainConfig.from_dict({"model": {"tiny": ["audio"]}, "data": {"train": str(uneven_answers)},
                                 "stage": {"loss": {"type": "cross_entropy", "average": average}},
                                 "feature_cache": {"enabled": False}, "optim": {"batch_size": 4}})
    objective = LMObjective(cfg, world=1, rank=0)
    lm = objective.build(torch.device("cpu"))
    lm.model.eval()  # no dropout: the two computations below must agree exactly
    rows = [objective.train_data.dataset[i] for i in range(4)]  # two short answers, two long ones
    batch = objective.prepare(objective.train_data.collator(rows), torch.device("cpu"))
    items = objective.items(batch)
    got = objective.loss(lm.model, batch)

    by_where = {f"{uneven_answers}:{r.line}": r for r in read_records(uneven_answers)}
    losses = [F.cross_entropy(*answer_logits(lm, by_where[row["where"]].messages), reduction="none") for row in rows]
    assert len({x.numel() for x in losses}) > 1  # the answers are of different lengths
    if average == "token":
        expected, count = sum(x.sum() for x in losses), sum(x.numel() for x in losses)
    else:
        expected, count = sum(x.mean() for x in losses), len(losses)
    assert items == count
    assert got.item() == pytest.approx(expected.item(), rel=1e-4)


def test_record_averaging_is_for_cross_entropy():
    base = {"model": {"tiny": ["audio"]}, "data": {"train": "x.jsonl"}}
    with pytest.raises(ConfigError, match=r"stage.loss.average: 'sample' is not one of"):
        TrainConfig.from_dict({**base, "stage": {"loss": {"average": "sample"}}})
    with pytest.raises(ConfigError, match=r"stage.loss.average: record averages cross-entropy only"):
        TrainConfig.from_dict({**base, "stage": {"loss": {"type": "distill", "average": "record"}}})
