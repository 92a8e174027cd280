"""The video encoder's temporal pooling and its frame-order embedding (and the ablation without it)."""

import torch

from omnilm.encoders.video import VideoEncoder
from omnilm.testing import tiny_config, tiny_model


def test_pooling_averages_frame_groups_and_the_order_embedding_marks_each_slot():
    per_frame = torch.randn(2, 4, 3, 8, generator=torch.Generator().manual_seed(0))  # (N, F, T, C)
    plain = VideoEncoder(num_frames=4, temporal_pool=2, dim=8, frame_order=False)
    pooled = plain.pool(per_frame)  # (N, (F/p)·T, C)
    assert pooled.shape == (2, 6, 8)
    assert torch.allclose(pooled[:, :3], per_frame[:, :2].mean(1))
    assert not list(plain.parameters())  # nothing to learn without the embedding
    ordered = VideoEncoder(num_frames=4, temporal_pool=2, dim=8)
    marked = ordered.pool(per_frame)
    assert torch.allclose(marked[:, 3:] - pooled[:, 3:], ordered.frame_position[1].expand(2, 3, 8).detach(), atol=1e-6)
    swapped = per_frame.flip(1)  # the same frames in reverse order
    assert torch.allclose(plain.pool(swapped)[:, :3], pooled[:, 3:])  # without it, slot content moves as it is
    assert not torch.allclose(ordered.pool(swapped)[:, :3], marked[:, 3:])  # with it, each slot says where it is


def test_a_model_config_turns_the_frame_order_embedding_off():
    config = tiny_config(("image", "video"))
    config.video.frame_order = False
    lm = type(tiny_model())  # the OmniLM class
    model = lm.from_config(config).model
    assert model.video.frame_position is None
    assert tiny_model(("image", "video")).model.video.frame_position is not None


def test_the_frame_change_projection_starts_at_zero_and_carries_what_changed_since_the_previous_slot():
    per_frame = torch.randn(2, 4, 3, 8, generator=torch.Generator().manual_seed(1))  # (N, F, T, C)
    plain = VideoEncoder(num_frames=4, temporal_pool=1, dim=8, frame_order=False)
    delta = VideoEncoder(num_frames=4, temporal_pool=1, dim=8, frame_order=False, frame_delta=True)
    assert torch.equal(delta.pool(per_frame), plain.pool(per_frame))  # a new model pools as before
    with torch.no_grad():
        delta.frame_delta.weight.copy_(torch.eye(8))
    slots = delta.pool(per_frame).unflatten(1, (4, 3))  # (N, F, T, C)
    assert torch.allclose(slots[:, 0], per_frame[:, 0])  # the first slot has nothing before it
    assert torch.allclose(slots[:, 1:], 2 * per_frame[:, 1:] - per_frame[:, :-1], atol=1e-6)
    still = per_frame[:, :1].expand(2, 4, 3, 8)  # one picture held for every frame: nothing changes
    delta.pool(still).sum().backward()
    assert torch.count_nonzero(delta.frame_delta.weight.grad) == 0
    delta.pool(per_frame).sum().backward()
    assert torch.count_nonzero(delta.frame_delta.weight.grad) > 0  # a change of picture trains it


def test_a_model_config_adds_the_frame_change_projection_and_saves_it_with_the_video_embedding():
    config = tiny_config(("image", "video"))
    config.video.frame_delta = True
    lm = type(tiny_model()).from_config(config)
    assert lm.model.video.frame_delta is not None
    assert "video.frame_delta.weight" in lm.model.head_state_dict()
    assert tiny_model(("image", "video")).model.video.frame_delta is None
