import numpy as np
import pytest
import torch

from omnilm import OmniLM
from omnilm.config import VisionConfig
from omnilm.errors import PlaceholderMismatchError
from omnilm.testing import tiny_model, tiny_parts

from conftest import random_image


def mixed_messages(red_image, wav_path, video_path):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": red_image},
                {"type": "audio", "audio": str(wav_path)},
                {"type": "video", "video": str(video_path)},
                {"type": "text", "text": "what is this?"},
            ],
        }
    ]


@pytest.mark.parametrize("connector", ["linear", "mlp", "resblock"])
@pytest.mark.parametrize("modality", ["image", "audio", "video"])
def test_each_modality_and_connector_runs(connector, modality, red_image, wav_path, video_path):
    lm = tiny_model((modality,), connector)
    item = {"image": red_image, "audio": str(wav_path), "video": str(video_path)}[modality]
    inputs = lm.processor([{"role": "user", "content": [{"type": modality, modality: item}]}])
    out = lm.model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(out.logits).all()


def test_placeholder_feature_count_check(tiny_lm, red_image):
    inputs = tiny_lm.processor("<image>", images=[red_image])
    keep = torch.ones_like(inputs["input_ids"][0], dtype=torch.bool)
    keep[(inputs["input_ids"][0] == tiny_lm.processor.placeholder_ids["image"]).nonzero()[:3]] = False
    inputs["input_ids"] = inputs["input_ids"][:, keep]  # three placeholder tokens fewer than features
    inputs["attention_mask"] = inputs["attention_mask"][:, keep]
    with pytest.raises(PlaceholderMismatchError, match="13 placeholder tokens but the media gave 16"):
        tiny_lm.model(**inputs)


def test_media_changes_the_output(tiny_lm):
    a = tiny_lm.model(**tiny_lm.processor("<image>", images=[random_image(1)])).logits
    b = tiny_lm.model(**tiny_lm.processor("<image>", images=[random_image(2)])).logits
    assert not torch.allclose(a, b)


def test_kv_cache_generation_equals_no_cache(tiny_lm, red_image, wav_path, video_path):
    messages = mixed_messages(red_image, wav_path, video_path)
    cached = tiny_lm.chat(messages, max_new_tokens=12)
    uncached = tiny_lm.chat(messages, max_new_tokens=12, use_cache=False)
    assert cached == uncached


def test_batched_generation_equals_one_by_one():
    lm = tiny_model(("image",), seed=3)
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": random_image(i)}, {"type": "text", "text": t}]}]
        for i, t in enumerate(["what colour", "is there a red circle in the image?", "shape"])
    ]
    batched = lm.chat_batch(conversations, max_new_tokens=10)
    single = [lm.chat(c, max_new_tokens=10) for c in conversations]
    assert batched == single


def test_stream_equals_chat_and_stop_strings(tiny_lm, red_image):
    messages = [{"role": "user", "content": [{"type": "image", "image": red_image}, {"type": "text", "text": "hi"}]}]
    full = tiny_lm.chat(messages, max_new_tokens=16, temperature=0)
    assert "".join(tiny_lm.stream(messages, max_new_tokens=16)) == full
    sampled = tiny_lm.chat(messages, max_new_tokens=16, temperature=1.0, seed=1, ignore_eos=True)
    assert sampled == tiny_lm.chat(messages, max_new_tokens=16, temperature=1.0, seed=1, ignore_eos=True)
    assert len(sampled) >= 5, sampled  # 16 tokens, none of them an end-of-sequence
    stop = sampled[3:5]
    cut = tiny_lm.chat(messages, max_new_tokens=16, temperature=1.0, seed=1, ignore_eos=True, stop=[stop])
    assert cut == sampled[: sampled.find(stop)] and len(cut) <= 3
    streamed = "".join(tiny_lm.stream(messages, max_new_tokens=16, temperature=1.0, seed=1, ignore_eos=True,
                                      stop=[stop]))
    assert streamed == cut


@pytest.mark.parametrize("full", [False, True])
def test_save_load_gives_identical_logits(tiny_lm, red_image, wav_path, video_path, tmp_path, full):
    messages = mixed_messages(red_image, wav_path, video_path)
    with torch.no_grad():
        for p in tiny_lm.model.connectors.parameters():
            p.add_(0.01)  # the checkpoint must carry the trained connector weights
        before = tiny_lm.model(**tiny_lm.processor(messages)).logits
    path = tiny_lm.save(tmp_path / "ckpt", full=full)
    assert (path / "omnilm.json").is_file() and (path / "model.safetensors").is_file()
    if full:
        assert (path / "llm").is_dir() and (path / "vision").is_dir() and (path / "audio").is_dir()
    again = OmniLM.from_pretrained(path)
    with torch.no_grad():
        after = again.model(**again.processor(messages)).logits
    assert torch.equal(before, after)


def test_trained_parts_are_stored(tmp_path, red_image):
    lm = tiny_model(("image",))
    lm.model.config.trained_parts.append("vision")
    with torch.no_grad():
        for p in lm.model.vision.parameters():
            p.mul_(1.5)
    inputs = lm.processor("<image>", images=[red_image])
    before = lm.model(**inputs).logits
    again = OmniLM.from_pretrained(lm.save(tmp_path / "ckpt"))
    assert torch.equal(before, again.model(**again.processor("<image>", images=[red_image])).logits)


@pytest.mark.parametrize(
    "pooling, pool_size, drop_cls, tokens, width",
    [("none", 1, True, 16, 32), ("none", 1, False, 17, 32), ("avg", 2, True, 4, 32), ("avg", 3, True, 4, 32),
     ("pixel_shuffle", 2, True, 4, 128)],
)
def test_vision_pooling(pooling, pool_size, drop_cls, tokens, width, red_image):
    vision = VisionConfig(source=tiny_parts()["vision"], pooling=pooling, pool_size=pool_size, drop_cls=drop_cls)
    lm = tiny_model(("image",), vision=vision)
    assert lm.processor.layout.image_tokens == tokens
    assert lm.model.vision.out_dim == width
    inputs = lm.processor("<image>", images=[red_image])
    assert torch.cat(lm.model.encode_media(pixel_values=inputs["pixel_values"])["image"]).shape == (tokens, 32)


def test_encoders_start_frozen(tiny_lm):
    assert not any(p.requires_grad for p in tiny_lm.model.vision.parameters())
    assert not any(p.requires_grad for p in tiny_lm.model.audio.parameters())
    assert all(p.requires_grad for p in tiny_lm.model.connectors.parameters())


def test_transcribe_mode_sends_every_clip_of_a_batch_to_whisper_at_once(tiny_lm, monkeypatch):
    class FakeWhisper:  # names each clip by its length: the substitution must keep clip order per conversation
        calls: list[int] = []

        def transcribe(self, clips):
            self.calls.append(len(clips))
            return [f"clip of {len(c)} samples" for c in clips]

    monkeypatch.setattr(tiny_lm.processor, "transcriber", FakeWhisper())
    monkeypatch.setattr(tiny_lm.processor.layout, "audio_mode", "transcribe")
    clip = lambda n: (np.zeros(n, np.float32), 16000)  # noqa: E731
    conversations = [
        [{"role": "user", "content": [{"type": "audio", "audio": clip(800)}, {"type": "text", "text": "and"},
                                      {"type": "audio", "audio": clip(1600)}]}],
        [{"role": "user", "content": [{"type": "text", "text": "only text"}]}],
        [{"role": "user", "content": [{"type": "audio", "audio": clip(2400)}]}],
    ]
    inputs = tiny_lm.prepare_inputs(conversations)
    assert FakeWhisper.calls == [3]
    texts = [tiny_lm.processor.tokenizer.decode(row, skip_special_tokens=True) for row in inputs["input_ids"]]
    assert "clip of 800 samples\nand\nclip of 1600 samples" in texts[0]
    assert "only text" in texts[1] and "clip of 2400 samples" in texts[2]
    assert tiny_lm.processor.placeholder_ids["audio"] not in inputs["input_ids"]


def test_transcripts_are_capped_by_the_longest_clip_of_the_batch():
    from types import SimpleNamespace

    from transformers import WhisperFeatureExtractor

    from omnilm.encoders.audio import WhisperTranscriber

    class FakeWhisper(torch.nn.Module):  # records what generation was asked for
        config = SimpleNamespace(max_target_positions=448)
        device, dtype, options = torch.device("cpu"), torch.float32, []

        def generate(self, features, **options):
            self.options.append(options)
            return torch.zeros(features.shape[0], 1, dtype=torch.long)

    tokenizer = SimpleNamespace(get_prompt_ids=lambda text: list(range(30)), batch_decode=lambda ids, **_: [""] * len(ids))
    whisper = FakeWhisper()
    transcriber = WhisperTranscriber(whisper, WhisperFeatureExtractor(), tokenizer, prompt="domain words")
    transcriber.transcribe([np.zeros(16000 * 2, np.float32), np.zeros(16000 * 3, np.float32)])  # 2 s and 3 s
    assert whisper.options[-1]["max_new_tokens"] == 3 * 10 + 8
    whisper.config = SimpleNamespace(max_target_positions=100)
    transcriber.transcribe([np.zeros(16000 * 30, np.float32)])  # 30 s: Whisper's own limit, less the prompt
    assert whisper.options[-1]["max_new_tokens"] == 100 - 30 - 4


def test_lm_head_gets_contiguous_input_in_generation(tiny_lm, red_image):
    seen = []  # a strided bf16 input sends CPU `linear` to a path ~300× slower
    hook = tiny_lm.model.llm.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append(args[0].is_contiguous())
    )
    try:
        tiny_lm.chat_batch([[{"role": "user", "content": "a long enough prompt here"}], "hi"], max_new_tokens=2)
    finally:
        hook.remove()
    assert seen and all(seen)


def test_lm_head_input_has_standard_strides_at_batch_one(tiny_lm):
    seen = []  # a (1, 1, D) slice of the prefill counts as contiguous yet keeps the prefill's batch stride
    hook = tiny_lm.model.llm.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append((tuple(args[0].shape), args[0].stride()))
    )
    try:
        tiny_lm.chat("a prompt long enough to have a prefill of many positions", max_new_tokens=2)
    finally:
        hook.remove()
    prefill_shape, prefill_strides = seen[0]
    assert prefill_shape[:2] == (1, 1)
    assert prefill_strides == (prefill_shape[2], prefill_shape[2], 1)  # a fresh row, not a view of (1, L, D)


def test_whisper_clips_lead_with_silence_inside_the_window():
    from omnilm.encoders.audio import LEAD_SILENCE_SECONDS, _lead_with_silence

    lead = int(LEAD_SILENCE_SECONDS * 16_000)
    clip = np.ones(1000, np.float32)
    padded = _lead_with_silence(clip, window=480_000)
    assert padded.shape == (lead + 1000,) and not padded[:lead].any() and (padded[lead:] == clip).all()
    assert _lead_with_silence(np.ones(479_900, np.float32), window=480_000).shape == (480_000,)  # never past 30 s


def test_a_full_save_of_a_model_that_hears_natively_loads_its_whisper_encoder_without_a_decoder(tmp_path, monkeypatch):
    import transformers

    import omnilm

    lm = tiny_model(("audio",))
    saved = lm.save(tmp_path / "model", full=True)  # audio/ holds the Whisper encoder's weights only
    clip = np.sin(np.linspace(0, 400, 16_000)).astype(np.float32)  # 1 s at 16 kHz
    features, _ = lm.processor.audio_features([clip])  # (1, n_mels, F)
    with torch.no_grad():
        expected = lm.model.audio(features)
    monkeypatch.setattr(transformers.WhisperForConditionalGeneration, "from_pretrained",
                        lambda *a, **k: pytest.fail("a whole Whisper was built for an encoder-only checkpoint"))
    again = omnilm.load(saved)
    with torch.no_grad():
        assert torch.equal(again.model.audio(features), expected)
