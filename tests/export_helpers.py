"""Checks shared by the export tests: an exported directory against the omnilm model it came from."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file
from torch import nn

from omnilm.lm import OmniLM
from omnilm.testing import make_shape_image

QUESTION = "what color is the shape?"


def _hf_messages():
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]


def _omni_messages(image):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]


def assert_llava_matches(lm: OmniLM, directory, *, image=None) -> transformers.LlavaForConditionalGeneration:
    """Plain transformers on the exported files (its own processor, chat template and pixels) against omnilm:
    the same ids and pixels, logits within 1e-4 (fp32), the same greedy text."""
    llava = transformers.LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()
    processor = transformers.AutoProcessor.from_pretrained(directory)
    image = make_shape_image("red", size=64) if image is None else image
    text = processor.apply_chat_template(_hf_messages(), add_generation_prompt=True)
    theirs = processor(images=[image], text=text, return_tensors="pt")
    ours = lm.processor(_omni_messages(image), add_generation_prompt=True)
    assert theirs["input_ids"].tolist() == ours["input_ids"].tolist()  # same template, same image token count
    torch.testing.assert_close(theirs["pixel_values"], ours["pixel_values"], atol=1e-5, rtol=0)
    with torch.no_grad():
        expected, logits = lm.model(**ours).logits, llava(**theirs).logits
        vocab = expected.shape[-1]  # the export may add zero rows for the image token (see hf_llava.vocab_sizes)
        torch.testing.assert_close(logits[..., :vocab], expected, atol=1e-4, rtol=0)
        assert not logits[..., vocab:].any()
        new = llava.generate(**theirs, max_new_tokens=8, do_sample=False)[0, theirs["input_ids"].shape[1]:]
    answer = lm.chat(_omni_messages(image), max_new_tokens=8)
    assert answer and processor.decode(new, skip_special_tokens=True) == answer
    return llava


# Ultravox: transformers has no class for it, so a module tree named and computed as vLLM's UltravoxModel ----
class RMSNorm(nn.Module):  # vLLM's RMSNorm.forward_native: in float32, then the weight
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class FeedForwardProjector(nn.Module):  # vLLM's UltravoxFeedForwardProjector with projector_ln_mid=True
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.stack = config["stack_factor"]
        dim_in, hidden = config["audio_config"]["d_model"] * self.stack, config["hidden_size"]
        self.ln_pre = RMSNorm(dim_in)
        self.linear_1 = nn.Linear(dim_in, hidden, bias=False)
        self.ln_mid = RMSNorm(hidden // 2)
        self.linear_2 = nn.Linear(hidden // 2, config["text_config"]["hidden_size"], bias=False)

    def forward(self, frames):  # (B, T, C): StackAudioFrames pads T to a multiple of k, then stacks
        b, t, c = frames.shape
        frames = F.pad(frames, (0, 0, 0, -t % self.stack)).reshape(b, -1, c * self.stack)
        h = self.linear_1(self.ln_pre(frames))
        d = h.shape[-1] // 2
        return self.linear_2(self.ln_mid(h[..., :d] * F.silu(h[..., d:])))  # MulAndSilu: x[:d] * silu(x[d:])


class ReferenceUltravox(nn.Module):
    """audio_tower (Whisper encoder at the clip's own length, as vLLM's UltravoxWhisperEncoder), projector, LM."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = config
        audio = transformers.WhisperConfig(**config["audio_config"])
        self.audio_tower = transformers.models.whisper.modeling_whisper.WhisperEncoder(audio)
        self.multi_modal_projector = FeedForwardProjector(config)
        text = transformers.AutoConfig.for_model(**config["text_config"])
        self.language_model = transformers.AutoModelForCausalLM.from_config(text)

    def encode(self, mel):  # (1, n_mels, F) → (1, F/2, C)
        tower = self.audio_tower
        x = F.gelu(tower.conv2(F.gelu(tower.conv1(mel)))).transpose(1, 2)
        x = x + tower.embed_positions.weight[: x.shape[1]]
        for layer in tower.layers:
            x = layer(x, None)
        return tower.layer_norm(x)

    def forward(self, input_ids, audio_values, audio_lens, audio_token_len, **_):
        clips = [self.multi_modal_projector(self.encode(audio_values[i : i + 1, :, :n]))[0, :tokens]
                 for i, (n, tokens) in enumerate(zip(audio_lens.tolist(), audio_token_len.tolist()))]
        embeds = self.language_model.get_input_embeddings()(input_ids)
        mask = (input_ids == self.config["audio_token_index"])[..., None]
        embeds = embeds.masked_scatter(mask, torch.cat(clips).to(embeds.dtype))
        return self.language_model(inputs_embeds=embeds).logits


def load_reference(directory) -> ReferenceUltravox:
    config = json.loads((directory / "config.json").read_text())
    model = ReferenceUltravox(config)
    result = model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
    tied = {"language_model.lm_head.weight"} if config["tie_word_embeddings"] else set()
    assert not result.unexpected_keys and set(result.missing_keys) == tied
    if tied:
        model.language_model.tie_weights()
    return model.eval()


def greedy(model, inputs, tokenizer, *, suppress, steps: int = 6) -> str:
    """Greedy decoding without a cache (the reference re-reads the whole sequence each step)."""
    ids, new = inputs["input_ids"], []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(**{**inputs, "input_ids": ids})[0, -1]
        logits[suppress] = float("-inf")
        token = int(logits.argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert new, "the reference generated nothing: the comparison would be empty"
    return tokenizer.decode(new, skip_special_tokens=True)
