"""`--to hf-ultravox`: the files load, strictly, into a module tree named and computed as vLLM's UltravoxModel is
(transformers has no Ultravox class), and with the exported processor it gives omnilm's logits and greedy text.

Verified here: vLLM's parameter names and shapes, config values, the projector's math (vLLM's RMSNorm,
MulAndSilu, v0.5 ln_mid), frame stacking, token counts, the chat template. Not verified: vLLM itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from export_helpers import greedy, load_reference

from omnilm.export import ExportError, export
from omnilm.testing import tiny_model


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16_000 * seconds)).astype(np.float32) * 0.1


@pytest.mark.parametrize("seconds", [0.3, 1.37])
def test_exported_ultravox_matches_omnilm(tmp_path, seconds):
    lm = tiny_model(("audio",), "swiglu")
    out = export(lm, tmp_path / "ultravox", to="hf-ultravox")
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["projector_act"], config["projector_ln_mid"]) == ("ultravox", "swiglu", True)
    assert (config["stack_factor"], config["hidden_size"], config["num_projector_layers"]) == (2, 32, 0)
    processor = transformers.AutoProcessor.from_pretrained(out, trust_remote_code=True)
    hf_messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "what was said?"}]}]
    text = processor.apply_chat_template(hf_messages, add_generation_prompt=True)
    theirs = processor(text=text, audios=[_clip(seconds)], sampling_rate=16_000, include_audio_num_chunks=True)
    omni = [{"role": "user", "content": [{"type": "audio", "audio": (_clip(seconds), 16_000)},
                                         {"type": "text", "text": "what was said?"}]}]
    ours = lm.processor(omni)
    tokens = lm.processor.layout.audio_tokens(_clip(seconds).size)
    assert theirs["audio_token_len"].tolist() == [tokens] and int(theirs["audio_num_chunks"].sum()) == 1
    at_audio = theirs["input_ids"] == config["audio_token_index"]
    assert at_audio.sum() == tokens and torch.equal(at_audio, ours["input_ids"] == lm.processor.placeholder_ids["audio"])
    assert torch.equal(theirs["input_ids"][~at_audio], ours["input_ids"][~at_audio])  # same text tokens
    torch.testing.assert_close(theirs["audio_values"], ours["audio_features"])
    reference = load_reference(out)
    with torch.no_grad():
        expected, logits = lm.model(**ours).logits, reference(**theirs)
    vocab = expected.shape[-1]  # the export adds zero rows for <|audio|> (suppressed in generation)
    torch.testing.assert_close(logits[..., :vocab], expected, atol=1e-4, rtol=0)
    assert not logits[..., vocab:].any()
    generation = json.loads((out / "generation_config.json").read_text())
    assert config["audio_token_index"] in generation["suppress_tokens"]
    assert greedy(reference, theirs, processor.tokenizer, suppress=generation["suppress_tokens"]) == lm.chat(
        omni, max_new_tokens=6)


def test_speech_models_ultravox_cannot_express_are_refused(tmp_path):
    for lm, needles in [
        (tiny_model(("audio",), "mlp"), ["connectors.audio.type 'mlp'", "connectors.audio.type: swiglu"]),
        (tiny_model(("image", "audio"), "swiglu"), ["image (vision encoder)", "--to hf-llava"]),
        (tiny_model(("image",)), ["no audio encoder"]),
    ]:
        with pytest.raises(ExportError) as err:
            export(lm, tmp_path / "out", to="hf-ultravox")
        assert all(n in str(err.value) for n in needles) and not (tmp_path / "out").exists()
