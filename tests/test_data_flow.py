"""One-way data flow: the processor transcribes (transcribe mode) and counts audio tokens; the model takes
its counts; gated cross-attention gets its media passed explicitly."""

import json

import numpy as np
import pytest
import torch

from omnilm.config import AudioConfig, FusionConfig
from omnilm.errors import MediaError, PlaceholderMismatchError
from omnilm.testing import tiny_model, tiny_parts
from omnilm.training.data import Collator


class FakeWhisper:
    """Names each clip by its length, so the transcript shows which clip went where."""

    def transcribe(self, clips):
        return [f"clip of {len(c)} samples" for c in clips]


def _clip(samples: int):
    return (np.zeros(samples, np.float32), 16_000)


@pytest.fixture(scope="module")
def transcribing():
    audio = AudioConfig(source=tiny_parts()["audio"], mode="transcribe")
    return tiny_model(("image", "audio"), audio=audio)


def test_transcribe_mode_processor_owns_whisper_and_the_model_has_no_audio_part(transcribing):
    assert transcribing.processor.transcriber is not None
    assert transcribing.model.audio is None and not hasattr(transcribing.model, "transcriber")


def test_spoken_training_records_collate_in_transcribe_mode(transcribing, monkeypatch, tmp_path):
    import soundfile

    monkeypatch.setattr(transcribing.processor, "transcriber", FakeWhisper())
    wav = tmp_path / "q.wav"
    soundfile.write(wav, np.zeros(800, np.float32), 16_000)
    record = [{"role": "user", "content": [{"type": "audio", "audio": str(wav)}, {"type": "text", "text": "q?"}]},
              {"role": "assistant", "content": "yes"}]
    batch = Collator(transcribing.processor)([{"messages": json.dumps(record), "where": "t.jsonl:1"}] * 2)
    batch.pop("media_items")
    text = transcribing.processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert "clip of 800 samples" in text and "audio_features" not in batch
    assert transcribing.processor.placeholder_ids["audio"] not in batch["input_ids"]
    labelled = batch["labels"][0][batch["labels"][0] != -100]
    assert transcribing.processor.tokenizer.decode(labelled).startswith("yes")  # only the answer is learnt
    loss = transcribing.model(**batch).loss
    assert torch.isfinite(loss)


def test_transcribe_mode_without_a_transcriber_says_how_to_load_one(transcribing, monkeypatch):
    monkeypatch.setattr(transcribing.processor, "transcriber", None)
    with pytest.raises(MediaError, match="omnilm.load"):
        transcribing.processor([{"role": "user", "content": [{"type": "audio", "audio": _clip(800)}]}])


def test_the_model_takes_the_processors_audio_token_counts(tiny_lm):
    inputs = tiny_lm.processor("<audio> and <audio>", audios=[_clip(4_000), _clip(20_000)])
    layout = tiny_lm.processor.layout
    assert inputs["audio_tokens"].tolist() == [layout.audio_tokens(4_000), layout.audio_tokens(20_000)]
    features = tiny_lm.model.encode_media(audio_features=inputs["audio_features"], audio_tokens=inputs["audio_tokens"])
    assert [f.shape[0] for f in features["audio"]] == inputs["audio_tokens"].tolist()
    wrong = dict(inputs, audio_tokens=inputs["audio_tokens"] - 1)  # the model counts nothing itself
    with pytest.raises(PlaceholderMismatchError):
        tiny_lm.model(**wrong)


def test_gated_xattn_media_are_passed_explicitly_not_left_in_a_slot():
    lm = tiny_model(("image",), "perceiver", connector_options={"num_latents": 4, "depth": 1, "heads": 4},
                    fusion=FusionConfig(mode="gated_xattn", every=1, heads=4))
    with torch.no_grad():
        for name, param in lm.model.fusion.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                param.fill_(1.0)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
        first, second = (lm.processor("<image> what?", images=[image]) for image in images)
        expected = lm.model(**first).logits
        embeds, context = lm.model.embed(first["input_ids"], pixel_values=first["pixel_values"])
        lm.model.embed(second["input_ids"], pixel_values=second["pixel_values"])  # another batch in between
        with lm.model.fusion.attending(context):
            again = lm.model.llm(inputs_embeds=embeds, attention_mask=first["attention_mask"]).logits
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
