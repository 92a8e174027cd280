"""`--to hf-llava` on packaged parts: DINOv2-S (no pooling, CLS dropped) + MLP + Qwen2.5-0.5B-Instruct, in fp32."""

import gc
import json

import pytest
import torch
from export_helpers import assert_llava_matches

from omnilm import OmniConfig, OmniLM
from omnilm.config import LLMConfig, VisionConfig
from omnilm.export import export

pytestmark = pytest.mark.real


def test_dinov2_qwen_exports_to_llava(tmp_path):
    from PIL import Image
    from skimage import data

    torch.manual_seed(0)
    lm = OmniLM.from_config(OmniConfig(llm=LLMConfig(source="pkg:qwen2.5-0.5b-instruct"),
                                       vision=VisionConfig(source="pkg:dinov2-small")))
    assert lm.processor.layout.image_tokens == 256  # 224 px / 14 = 16×16 patches, CLS dropped
    out = export(lm, tmp_path / "llava", to="hf-llava")
    config = json.loads((out / "config.json").read_text())
    assert (config["vision_config"]["model_type"], config["vision_feature_select_strategy"]) == ("dinov2", "default")
    llava = assert_llava_matches(lm, out, image=Image.fromarray(data.astronaut()))
    del llava, lm
    gc.collect()
