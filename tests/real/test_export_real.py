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


def test_whisper_swiglu_qwen_exports_to_ultravox(tmp_path):
    import numpy as np
    import transformers
    from export_helpers import greedy, load_reference

    from omnilm.config import AudioConfig, ConnectorConfig

    torch.manual_seed(0)
    lm = OmniLM.from_config(OmniConfig(llm=LLMConfig(source="pkg:qwen2.5-0.5b-instruct"),
                                       audio=AudioConfig(source="pkg:whisper-base", stack_factor=8),
                                       connectors={"audio": ConnectorConfig(type="swiglu")}))
    out = export(lm, tmp_path / "ultravox", to="hf-ultravox")
    clip = np.sin(np.arange(24_000) * 0.05).astype(np.float32) * 0.2  # 1.5 s
    processor = transformers.AutoProcessor.from_pretrained(out, trust_remote_code=True)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "audio"}]}], add_generation_prompt=True)
    theirs = processor(text=text, audios=[clip], sampling_rate=16_000)
    omni = [{"role": "user", "content": [{"type": "audio", "audio": (clip, 16_000)}]}]
    ours = lm.processor(omni)
    assert theirs["audio_token_len"].tolist() == [lm.processor.layout.audio_tokens(clip.size)] == [10]
    reference = load_reference(out)
    with torch.no_grad():
        expected, logits = lm.model(**ours).logits, reference(**theirs)
    torch.testing.assert_close(logits[..., : expected.shape[-1]], expected, atol=1e-4, rtol=0)
    suppress = json.loads((out / "generation_config.json").read_text()).get("suppress_tokens", [])
    assert greedy(reference, theirs, processor.tokenizer, suppress=suppress, steps=4) == lm.chat(omni, max_new_tokens=4)
    del reference, lm
    gc.collect()


def test_whisper_swiglu_qwen_through_stock_llama_cpp(tmp_path):
    """Packaged Whisper-base + swiglu + Qwen2.5-0.5B exported --to llama.cpp: stock llama-cpp-python's mtmd
    (tests/stock_llamacpp.py) gives omnilm's prompt tokens and greedy tokens on a clip filling the 30 s window."""
    pytest.importorskip("llama_cpp")
    import io

    import numpy as np
    import soundfile as sf
    from stock_llamacpp import StockPair
    from test_export_llamacpp import WINDOW_CLIP_SAMPLES, _omnilm_greedy

    from omnilm.config import AudioConfig, ConnectorConfig

    torch.manual_seed(0)
    lm = OmniLM.from_config(OmniConfig(llm=LLMConfig(source="pkg:qwen2.5-0.5b-instruct", dtype="float32"),
                                       audio=AudioConfig(source="pkg:whisper-base", stack_factor=4),
                                       connectors={"audio": ConnectorConfig(type="swiglu")}))
    out = export(lm, tmp_path / "pair", to="llama.cpp", quant="F32")
    clip = (np.random.default_rng(0).standard_normal(WINDOW_CLIP_SAMPLES) * 0.05).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, clip, 16_000, format="WAV", subtype="FLOAT")
    omni = [{"role": "user", "content": [{"type": "audio", "audio": (clip, 16_000)}, {"type": "text", "text": "Hi"}]}]
    stock_messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
                                                   {"type": "text", "text": "Hi"}]}]
    stock = StockPair(str(out / "model.gguf"), str(out / "mmproj.gguf"))
    try:
        their_prompt, theirs, _ = stock.greedy(stock.render(stock_messages), [wav.getvalue()], max_new_tokens=6)
    finally:
        stock.close()
    our_prompt, ours, _ = _omnilm_greedy(lm, omni)
    assert their_prompt == our_prompt and their_prompt.count(-1) == 375  # 1500 encoder frames / 4
    assert theirs == ours[:6] and len(theirs) >= 3
    del lm
    gc.collect()
