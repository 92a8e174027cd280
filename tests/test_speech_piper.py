"""The piper engine with a stand-in voice: an ONNX graph with piper's inputs and output (built here; no piper voice
ships offline), so the engine's loading, speaker mapping and serving are tested, not piper's speech quality."""

from __future__ import annotations

import json

import numpy as np
import pytest

piper = pytest.importorskip("piper", reason="pip install piper-tts")
openai = pytest.importorskip("openai")

from omnilm.serve import ServeSettings, create_app
from omnilm.serve.background import BackgroundServer
from omnilm.serve.voice import VoiceSettings
from omnilm.speech.tts import load_engine

SAMPLES_PER_ID = 256


def stand_in_voice(path, speakers: list[str]):
    """VOICE.onnx + VOICE.onnx.json: (input ids (1, N), input_lengths, scales, sid) → sin(0.37·(id + sid)) repeated
    256 times: (1, 1, 256·N) samples; piper's own phonemizer and id map feed it."""
    import onnx
    from onnx import TensorProto, helper
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    nodes = [helper.make_node("Cast", ["input"], ["ids"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["sid"], ["speaker"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["ids", "speaker"], ["shifted"]),
             helper.make_node("Unsqueeze", ["shifted", "axes"], ["rows"]),  # (1, 1, N)
             helper.make_node("Tile", ["rows", "repeats"], ["tiled"]),  # (1, 1, 256·N)
             helper.make_node("Mul", ["tiled", "scale"], ["phase"]),
             helper.make_node("Sin", ["phase"], ["output"])]
    constants = [helper.make_tensor("axes", TensorProto.INT64, [1], [0]),
                 helper.make_tensor("repeats", TensorProto.INT64, [3], [1, 1, SAMPLES_PER_ID]),
                 helper.make_tensor("scale", TensorProto.FLOAT, [], [0.37])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "n"]),
              helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
              helper.make_tensor_value_info("sid", TensorProto.INT64, [1])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, None])]
    graph = helper.make_graph(nodes, "stand-in", inputs, outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    config = {"audio": {"sample_rate": 16_000}, "espeak": {"voice": "en-us"}, "phoneme_type": "espeak",
              "num_symbols": 1 + max(i for ids in DEFAULT_PHONEME_ID_MAP.values() for i in ids),
              "num_speakers": len(speakers), "speaker_id_map": {s: i for i, s in enumerate(speakers)},
              "phoneme_id_map": DEFAULT_PHONEME_ID_MAP}
    path.with_name(path.name + ".json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def voice_file(tmp_path_factory):
    return stand_in_voice(tmp_path_factory.mktemp("piper") / "stand-in.onnx", ["amy", "bob"])


def test_piper_engine_maps_openai_names_to_the_voice_speakers(voice_file):
    engine = load_engine("piper", voice_file=voice_file)
    voices = {v.id: v.engine_voice for v in engine.voices()}
    assert (voices["alloy"], voices["ash"], voices["ballad"]) == ("amy", "bob", "amy")
    assert voices["amy"] == "amy" and engine.voices()[0].language == "en-us"
    text = "Hello there. How are you?"
    amy, rate = engine.synthesize(text, voice="alloy")
    bob, _ = engine.synthesize(text, voice="bob")
    ids = sum(len(engine.model.phonemes_to_ids(p)) for p in engine.model.phonemize(text))
    assert rate == 16_000 and amy.size == bob.size == SAMPLES_PER_ID * ids  # both sentences, every phoneme id
    assert not np.allclose(amy, bob)  # the speaker id reached the model


def test_piper_served_through_the_openai_client(tiny_lm, voice_file):
    voice = VoiceSettings(tts="piper", tts_voice_file=str(voice_file))
    with BackgroundServer(create_app(tiny_lm, ServeSettings(), voice)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        audio = client.audio.speech.create(model="tts-1", voice="echo", input="Good morning.", response_format="flac")
        assert audio.content.startswith(b"fLaC")
        listing = client.get("/audio/voices", cast_to=object)
        assert listing["engine"] == "piper" and [v["id"] for v in listing["data"]][-2:] == ["amy", "bob"]
        with pytest.raises(openai.BadRequestError, match="unknown voice 'carol' for piper"):
            client.audio.speech.create(model="tts-1", voice="carol", input="Hi.")
