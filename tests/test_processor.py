import base64
import io

import numpy as np
import pytest
import soundfile
import torch

from omnilm.errors import ContextLengthError, MediaError, OmniError, PlaceholderMismatchError
from omnilm.processor import IGNORE_INDEX

from conftest import random_image


def count(inputs, lm, modality):
    return int((inputs["input_ids"] == lm.processor.placeholder_ids[modality]).sum())


def test_interleaved_multi_media_expands_in_order(tiny_lm, wav_path, video_path):
    layout = tiny_lm.processor.layout
    short = (np.zeros(8000, np.float32), 16000)  # 0.5 s
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first"},
                {"type": "image", "image": random_image(0)},
                {"type": "audio", "audio": str(wav_path)},
                {"type": "text", "text": "then"},
                {"type": "image", "image": random_image(1)},
                {"type": "video", "video": str(video_path)},
                {"type": "audio", "audio": short},
            ],
        }
    ]
    inputs = tiny_lm.processor(messages)
    assert count(inputs, tiny_lm, "image") == 2 * layout.image_tokens
    assert count(inputs, tiny_lm, "video") == layout.video_tokens
    assert count(inputs, tiny_lm, "audio") == layout.audio_tokens(16000) + layout.audio_tokens(8000)
    assert inputs["pixel_values"].shape == (2, 3, layout.image_size, layout.image_size)
    assert inputs["video_pixel_values"].shape == (1, layout.video_frames, 3, layout.image_size, layout.image_size)
    assert inputs["audio_features"].shape[0] == 2
    # placeholders appear in the order the parts were given
    ids = inputs["input_ids"][0].tolist()
    pid = tiny_lm.processor.placeholder_ids
    firsts = [ids.index(pid[m]) for m in ("image", "audio", "video")]
    assert firsts[0] < firsts[1] < firsts[2]


def test_audio_is_not_padded_to_30_seconds(tiny_lm):
    one = tiny_lm.processor("<audio>", audios=[(np.zeros(16000, np.float32), 16000)])
    two = tiny_lm.processor("<audio>", audios=[(np.zeros(32000, np.float32), 16000)])
    assert one["audio_features"].shape[-1] == 100  # 1 s = 100 mel frames, not 3000
    assert two["audio_features"].shape[-1] == 200
    assert count(two, tiny_lm, "audio") == 2 * count(one, tiny_lm, "audio")


def test_labels_cover_only_assistant_turns(tiny_lm, red_image):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image", "image": red_image}, {"type": "text", "text": "colour?"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "shape?"},
        {"role": "assistant", "content": "circle"},
    ]
    inputs = tiny_lm.processor([conversation], return_labels=True, padding_side="right")
    labels = inputs["labels"][0]
    kept = tiny_lm.processor.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert kept == "red<|im_end|>\ncircle<|im_end|>\n"
    assert not torch.isin(inputs["input_ids"][0][labels != IGNORE_INDEX], torch.tensor([3, 4, 5])).any()


def test_no_assistant_turn_is_an_error_for_training(tiny_lm):
    with pytest.raises(ValueError, match="no assistant turn"):
        tiny_lm.processor([[{"role": "user", "content": "hi"}]], return_labels=True)


def test_left_padding_for_a_batch(tiny_lm):
    inputs = tiny_lm.processor([[{"role": "user", "content": "a"}], [{"role": "user", "content": "a longer one"}]])
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()


@pytest.mark.parametrize(
    "prompt, images",
    [("two <image> <image>", 1), ("none here", 1), ("<image>", 0)],
)
def test_placeholder_media_mismatch(tiny_lm, prompt, images):
    with pytest.raises(PlaceholderMismatchError, match="placeholder"):
        tiny_lm.processor(prompt, images=[random_image(i) for i in range(images)])


def test_media_the_model_lacks_is_refused():
    from omnilm.testing import tiny_model

    text_image = tiny_model(("image",))
    with pytest.raises(OmniError, match="does not take audio"):
        text_image.processor([{"role": "user", "content": [{"type": "audio", "audio": b"x"}]}])


def test_prompt_longer_than_context(tiny_lm):
    with pytest.raises(ContextLengthError, match="context of 1024"):
        tiny_lm.processor("red " * 3000)


def test_fallback_chat_template():
    from omnilm.layout import MediaLayout
    from omnilm.processor import OmniProcessor
    from omnilm.testing import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    processor = OmniProcessor(tokenizer, MediaLayout(placeholders={}))
    text = processor.tokenizer.decode(processor("hello")["input_ids"][0])
    assert text == "User: hello\nAssistant:"


def test_system_prompt_is_added_where_a_conversation_has_none_and_is_saved(tmp_path):
    from omnilm.layout import MediaLayout
    from omnilm.processor import OmniProcessor
    from omnilm.testing import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    processor = OmniProcessor(tokenizer, MediaLayout(placeholders={}, system_prompt="Be brief."))

    def text(conversation, **kwargs):
        return processor.tokenizer.decode(processor(conversation, **kwargs)["input_ids"][0])

    assert text("hello") == "System: Be brief.\nUser: hello\nAssistant:"
    own = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello"}]
    assert text(own) == "System: Be kind.\nUser: hello\nAssistant:"  # the conversation's own wins
    labelled = processor([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                         return_labels=True)
    learned = labelled["labels"][0][labelled["labels"][0] != IGNORE_INDEX]
    assert processor.tokenizer.decode(learned).strip() == "yo"  # labels still cover the answer only
    processor.save_pretrained(tmp_path)
    assert OmniProcessor.from_pretrained(tmp_path).layout.system_prompt == "Be brief."


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", None)])
def test_audio_formats_and_resampling(tiny_lm, fmt, subtype):
    rate = 44100
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1).astype(np.float32) * 0.3
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, rate, format=fmt, subtype=subtype)
    from omnilm.media import load_audio

    samples = load_audio(buffer.getvalue())
    assert samples.ndim == 1
    assert abs(samples.size - 16000) < 1200  # ~1 s at 16 kHz (MP3 adds encoder padding)
    inputs = tiny_lm.processor("<audio>", audios=[buffer.getvalue()])
    assert count(inputs, tiny_lm, "audio") == tiny_lm.processor.layout.audio_tokens(samples.size)


def test_images_from_every_source(tiny_lm, red_image, png_bytes, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes)
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes).decode()
    tensors = [tiny_lm.processor("<image>", images=[x])["pixel_values"] for x in (red_image, png_bytes, str(path), data_url)]
    for t in tensors[1:]:
        assert torch.equal(t, tensors[0])


@pytest.mark.parametrize(
    "item, message",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a readable image"),
        ("data:image/png;base64,@@@", "base64"),
        ("/no/such/file.png", "does not exist"),
    ],
)
def test_bad_images(tiny_lm, item, message):
    with pytest.raises(MediaError, match=message):
        tiny_lm.processor("<image>", images=[item])


def test_truncated_image(tiny_lm, png_bytes):
    with pytest.raises(MediaError, match="truncated|not a readable"):
        tiny_lm.processor("<image>", images=[png_bytes[: len(png_bytes) // 2]])


def test_huge_image_refused_before_decoding(tiny_lm):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (9000, 5000)).save(buffer, format="PNG")  # 45 Mpx, a few KB on disk
    with pytest.raises(MediaError, match="over the limit"):
        tiny_lm.processor("<image>", images=[buffer.getvalue()])


@pytest.mark.parametrize(
    "item, message",
    [(b"this is not audio at all", "not a readable audio"), ((np.zeros(0, np.float32), 16000), "empty")],
)
def test_bad_audio(tiny_lm, item, message):
    with pytest.raises(MediaError, match=message):
        tiny_lm.processor("<audio>", audios=[item])


def test_too_long_audio(tiny_lm):
    with pytest.raises(MediaError, match="over the limit"):
        tiny_lm.processor("<audio>", audios=[(np.zeros(16000 * 31, np.float32), 16000)])


def test_video_without_frames(tiny_lm, tmp_path, wav_path):
    with pytest.raises(MediaError, match="video"):
        tiny_lm.processor("<video>", videos=[wav_path.read_bytes()])  # a WAV has no video stream
    with pytest.raises(MediaError, match="video"):
        tiny_lm.processor("<video>", videos=[b"\x00" * 1000])
