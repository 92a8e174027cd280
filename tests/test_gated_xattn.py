"""Gated cross-attention (Flamingo): identity at start, any decoder-only LLM, cached media, generation."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from omnilm.config import FusionConfig, OmniConfig
from omnilm.errors import ConfigError, PlaceholderMismatchError
from omnilm.fusion import GatedXAttnFusion, decoder_layers

OPTIONS = {"num_latents": 4, "depth": 1, "heads": 4}


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))


def _open_gates(fusion, value: float = 1.0, which: tuple[str, ...] = ("attn_gate", "ff_gate")) -> None:
    with torch.no_grad():
        for name, param in fusion.named_parameters():
            if name.endswith(which):
                param.fill_(value)


@pytest.fixture(scope="module")
def lm():
    from omnilm.testing import tiny_model

    return tiny_model(("image", "audio"), "perceiver", connector_options=OPTIONS,
                      fusion=FusionConfig(mode="gated_xattn", every=1, heads=4))


@pytest.fixture
def gates_open(lm):
    _open_gates(lm.model.fusion, 1.0)
    yield lm
    _open_gates(lm.model.fusion, 0.0)


# Any decoder-only LLM, found generically ------------------------------------------------------------
FAMILIES = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=64)),
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=64, vocab_size=64, word_embed_proj_dim=32)),
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=64)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=64)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_any_decoder_only_llm(family):
    torch.manual_seed(0)
    llm = FAMILIES[family]().eval()
    assert len(decoder_layers(llm)) == 3
    fusion = GatedXAttnFusion(llm, modalities=("image",), every=2, heads=4, ff_mult=2)
    assert sorted(fusion.blocks) == ["0", "2"]  # before layers 0 and 2
    ids = torch.tensor([[5, 6, 9, 7, 8]])  # 9 plays the placeholder
    bare = llm(input_ids=ids.masked_fill(ids == 9, 0)).logits
    embeds, context = fusion.embed(ids, {"image": [torch.randn(4, 32)]}, {"image": 9}, llm.get_input_embeddings())
    with fusion.attending(context):
        closed = llm(inputs_embeds=embeds).logits
    _open_gates(fusion, which=("attn_gate",))  # the feed-forward gate acts on every token, as in Flamingo
    _, context = fusion.embed(ids, {"image": [torch.randn(4, 32)]}, {"image": 9}, llm.get_input_embeddings())
    with fusion.attending(context):
        opened = llm(inputs_embeds=embeds).logits
    outside = llm(inputs_embeds=embeds).logits  # outside `attending`: the blocks do nothing
    torch.testing.assert_close(outside, closed)
    torch.testing.assert_close(closed[:, :2], bare[:, :2])  # the placeholder's own embedding is learned
    torch.testing.assert_close(opened[:, :2], closed[:, :2])  # text before the image cannot see it
    assert not torch.allclose(opened[:, 2:], closed[:, 2:])  # text from the image on does
    assert set(llm.state_dict()) == set(FAMILIES[family]().state_dict())  # the LLM's own names are untouched


def test_no_decoder_layer_list_is_a_clear_error():
    llm = FAMILIES["llama"]()
    llm.config.num_hidden_layers = 5
    with pytest.raises(ConfigError, match="found no list of 5 decoder layers"):
        decoder_layers(llm)


# Through OmniModel -------------------------------------------------------------------------------
def test_one_placeholder_per_item(lm):
    assert lm.processor.layout.image_tokens == 1
    assert lm.processor.layout.audio_tokens(40_000) == 1
    inputs = lm.processor("<image> and <image> <audio>?", images=[_image(0), _image(1)],
                          audios=[(np.zeros(8000, np.float32), 16000)])
    assert int((inputs["input_ids"] == lm.processor.placeholder_ids["image"]).sum()) == 2
    assert int((inputs["input_ids"] == lm.processor.placeholder_ids["audio"]).sum()) == 1


def test_zero_gates_give_the_bare_llms_logits(lm):
    model = lm.model
    inputs = lm.processor("say <image> what colour?", images=[_image(0)])
    logits = model(**inputs).logits
    embeds, _ = model.embed(inputs["input_ids"], pixel_values=inputs["pixel_values"])
    bare = model.llm(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    torch.testing.assert_close(logits, bare, rtol=0, atol=0)
    other = lm.processor("say <image> what colour?", images=[_image(7)])
    torch.testing.assert_close(model(**other).logits, logits, rtol=0, atol=0)  # the image has no influence yet
    text_only = lm.processor("say what colour?")
    torch.testing.assert_close(model(**text_only).logits, model.llm(input_ids=text_only["input_ids"]).logits)


def test_open_gates_use_the_media(gates_open):
    lm = gates_open
    a = lm.model(**lm.processor("say <image> what colour?", images=[_image(0)])).logits
    b = lm.model(**lm.processor("say <image> what colour?", images=[_image(7)])).logits
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_cached_generation_equals_uncached(gates_open):
    lm = gates_open
    for prompt, images in [("<image> describe", [_image(3)]), ("a <image> b <image> c", [_image(4), _image(5)])]:
        cached = lm.generate(prompt, images=images, max_new_tokens=8, use_cache=True)
        uncached = lm.generate(prompt, images=images, max_new_tokens=8, use_cache=False)
        assert cached == uncached and cached


def test_batch_with_and_without_media(gates_open):
    lm = gates_open
    with_image = [{"type": "image", "image": _image(3)}, {"type": "text", "text": "describe"}]
    convs = [[{"role": "user", "content": with_image}], [{"role": "user", "content": "just text here"}]]
    together = lm.chat_batch(convs, max_new_tokens=6)
    assert together == [lm.chat(c, max_new_tokens=6) for c in convs]


def test_media_keys_values_computed_once_per_generation(gates_open, monkeypatch):
    lm = gates_open
    calls = []
    for key, block in lm.model.fusion.blocks.items():
        original = block.attn.keys_values
        monkeypatch.setattr(block.attn, "keys_values", lambda media, o=original, k=key: calls.append(k) or o(media))
    encodes = []
    original_encode = lm.model.encode_media
    monkeypatch.setattr(lm.model, "encode_media", lambda **m: encodes.append(1) or original_encode(**m))
    inputs = lm.processor("<image> describe", images=[_image(3)])
    new = lm.model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert new.shape[1] == 6
    assert sorted(calls) == sorted(lm.model.fusion.blocks) and len(encodes) == 1
    assert lm.model.fusion.context is None  # nothing leaks to the next call


def test_gradients_with_a_frozen_llm(lm):
    model = lm.model.train()
    model.llm.requires_grad_(False)
    question = [{"type": "image", "image": _image(2)}, {"type": "text", "text": "?"}]
    batch = lm.processor([[{"role": "user", "content": question}, {"role": "assistant", "content": "red"}]],
                         return_labels=True)
    model.zero_grad()
    model(**batch).loss.backward()
    gates = {n: p.grad for n, p in model.fusion.named_parameters() if n.endswith("_gate")}
    assert all(g is not None and g.abs().sum() > 0 for g in gates.values())  # zero gates still learn
    _open_gates(model.fusion, 0.5)
    model.zero_grad()
    model(**batch).loss.backward()
    trainable = [*model.fusion.named_parameters(prefix="fusion"), *model.connectors.named_parameters(prefix="c")]
    for name, param in trainable:
        if name.endswith("media_token.audio") or name.startswith("c.audio."):
            continue  # no audio in this batch
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.llm.parameters())
    _open_gates(model.fusion, 0.0)
    model.llm.requires_grad_(True)
    model.eval()


def test_placeholder_count_mismatch(lm):
    inputs = lm.processor("<image> describe", images=[_image(3)])
    with pytest.raises(PlaceholderMismatchError, match="1 placeholder tokens but 2 media items"):
        lm.model(input_ids=inputs["input_ids"], pixel_values=torch.cat([inputs["pixel_values"]] * 2))


def test_save_and_load_round_trip(gates_open, tmp_path):
    from omnilm.lm import OmniLM

    lm = gates_open
    lm.save(tmp_path / "ckpt")
    loaded = OmniLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.fusion.mode == "gated_xattn"
    inputs = lm.processor("<image> describe", images=[_image(3)])
    torch.testing.assert_close(loaded.model(**inputs).logits, lm.model(**inputs).logits, rtol=0, atol=0)


def test_config_validation():
    with pytest.raises(ConfigError, match="fusion.mode: 'cross' is not one of"):
        OmniConfig.from_dict({"llm": {"source": "x"}, "fusion": {"mode": "cross"}})
    with pytest.raises(ConfigError, match="gated_xattn needs a media encoder"):
        OmniConfig.from_dict({"llm": {"source": "x"}, "fusion": {"mode": "gated_xattn"}})
    with pytest.raises(ConfigError, match="fusion.every: must be >= 1"):
        OmniConfig.from_dict({"llm": {"source": "x"}, "vision": {"source": "v"}, "fusion": {"every": 0}})
