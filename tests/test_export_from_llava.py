"""The reverse direction: omnilm.load of a Llava directory (one written by transformers, or by `--to hf-llava`)
gives the same logits as transformers (and as the omnilm model it came from), and trains like any omnilm model."""

from __future__ import annotations

import pytest
import torch
import transformers

import omnilm
from omnilm.errors import OmniError
from omnilm.export import export
from omnilm.testing import build_tokenizer, make_shape_image, tiny_model

PARTS_TEMPLATE = (  # a llava-1.5-style processor template: it reads content parts
    "{% for message in messages %}{{ message['role'] | upper }}: {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@pytest.fixture(autouse=True)
def converted_in_tmp(tmp_path, monkeypatch):
    """Conversions go to the test's own cache, not the shared one."""
    from omnilm.export import from_llava

    monkeypatch.setattr(from_llava, "cache_dir", lambda *parts: tmp_path.joinpath("cache", *parts))


def _messages(image=None):
    image_part = {"type": "image"} if image is None else {"type": "image", "image": image}
    return [{"role": "user", "content": [image_part, {"type": "text", "text": "what color is the shape?"}]}]


def write_llava(path, *, strategy="default", layer=-1, bias=True, act="gelu"):
    """A random tiny Llava (CLIP tower + Qwen2 LM) saved by transformers, with its processor."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, image_size=32, patch_size=8).to_dict(),
        text_config=transformers.Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             initializer_range=0.4, tie_word_embeddings=False).to_dict(),
        image_token_index=image_id, vision_feature_select_strategy=strategy, vision_feature_layer=layer,
        multimodal_projector_bias=bias, projector_hidden_act=act, image_seq_length=16 + (strategy == "full"),
    )
    model = transformers.LlavaForConditionalGeneration(config)
    model.save_pretrained(path)
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                                vision_feature_select_strategy=strategy, chat_template=PARTS_TEMPLATE,
                                num_additional_image_tokens=1).save_pretrained(path)
    return model.eval()


@pytest.mark.parametrize(("strategy", "layer", "bias"), [("default", -1, True), ("full", -2, False)])
def test_a_transformers_llava_loads_with_the_same_logits(tmp_path, strategy, layer, bias):
    llava = write_llava(tmp_path / "llava", strategy=strategy, layer=layer, bias=bias)
    lm = omnilm.load(tmp_path / "llava")
    assert (lm.config.vision.feature_layer, lm.config.vision.drop_cls) == (layer, strategy == "default")
    image = make_shape_image("blue", size=48)
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "llava")
    theirs = processor(images=[image], text=processor.apply_chat_template(_messages(), add_generation_prompt=True),
                       return_tensors="pt")
    ours = lm.processor(_messages(image))
    assert theirs["input_ids"].tolist() == ours["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(lm.model(**ours).logits, llava(**theirs).logits, atol=1e-4, rtol=0)


def test_round_trip_omnilm_llava_omnilm(tmp_path):
    lm = tiny_model(("image",))
    back = omnilm.load(export(lm, tmp_path / "llava", to="hf-llava"))
    inputs = lm.processor(_messages(make_shape_image("red", size=64)))
    with torch.no_grad():
        torch.testing.assert_close(back.model(**back.processor(_messages(make_shape_image("red", size=64)))).logits,
                                   lm.model(**inputs).logits, atol=1e-5, rtol=0)
    (converted,) = (tmp_path / "cache" / "llava").iterdir()
    assert back.config.llm.source == str(converted / "llm")
    stamp = (converted / "omnilm.json").stat().st_mtime_ns
    again = omnilm.load(tmp_path / "llava")  # converted once: the second load reads the cached checkpoint
    assert again.config.llm.source == back.config.llm.source
    assert (converted / "omnilm.json").stat().st_mtime_ns == stamp


def test_the_converted_llava_trains_and_saves(tmp_path):
    write_llava(tmp_path / "llava")
    lm = omnilm.load(tmp_path / "llava")
    model = lm.model.train()
    inputs = lm.processor([[*_messages(make_shape_image("red")), {"role": "assistant", "content": "red"}]],
                          return_labels=True)
    model(**inputs).loss.backward()
    assert all(p.grad is not None for p in model.connectors.parameters())
    model.eval()
    with torch.no_grad():
        model.connectors["image"].net[0].bias.add_(0.1)  # a "trained" connector
        expected = model(**inputs).logits
    lm.save(tmp_path / "tuned")
    tuned = omnilm.load(tmp_path / "tuned")
    with torch.no_grad():
        torch.testing.assert_close(tuned.model(**inputs).logits, expected)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"act": "silu"}, "projector_hidden_act 'silu'"),
    ({"layer": [-2, -1]}, "vision_feature_layer [-2, -1]"),
])
def test_llavas_omnilm_cannot_express_are_refused(tmp_path, kwargs, message):
    write_llava(tmp_path / "llava", **kwargs)
    with pytest.raises(OmniError, match=message.replace("[", r"\[")):
        omnilm.load(tmp_path / "llava")


def test_a_hub_id_whose_config_says_llava_is_downloaded_and_converted(tmp_path, monkeypatch):
    import huggingface_hub

    write_llava(tmp_path / "snapshot")
    asked = []
    def download(repo, name):
        if not (tmp_path / "snapshot" / name).is_file():
            raise FileNotFoundError(name)  # the hub's answer for a file the repo lacks (omnilm.json)
        return str(tmp_path / "snapshot" / name)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, allow_patterns: asked.append((repo, allow_patterns)) or str(tmp_path / "snapshot"))
    lm = omnilm.load("llava-hf/tiny-llava")
    assert lm.name == "llava-hf/tiny-llava" and lm.modalities == ("image",)
    assert [repo for repo, _ in asked] == ["llava-hf/tiny-llava"]
