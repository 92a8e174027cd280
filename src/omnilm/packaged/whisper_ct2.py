"""CTranslate2 Whisper (`model.bin`, binary version 6) → `WhisperForConditionalGeneration`.

transformers cannot read CTranslate2, so the file is parsed here and its variables mapped by name. CTranslate2
fuses attention projections (self-attention q|k|v, cross-attention k|v) and gives the key projection a bias
of zeros, which Whisper does not have; both are undone below.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from omnilm.packaged.cache import PackagedModelError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 (bf16) unused by Whisper
_VERSION = 6


class _Reader:
    """Little-endian cursor over the file's bytes."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer, self.offset = buffer, 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.buffer, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.unpack("H")  # includes a trailing NUL
        raw = bytes(self.buffer[self.offset : self.offset + length])
        self.offset += length
        return raw.rstrip(b"\0").decode("utf-8")

    def take(self, nbytes: int) -> memoryview:
        view = self.buffer[self.offset : self.offset + nbytes]
        self.offset += nbytes
        return view


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Spec name and variables (read-only views of the file's bytes, aliases resolved) of a model.bin."""
    reader = _Reader(memoryview(Path(path).read_bytes()))
    version = reader.unpack("I")
    if version != _VERSION:
        raise PackagedModelError(f"{path}: CTranslate2 binary version {version}; only {_VERSION} is supported.")
    spec_name = reader.string()
    reader.unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        dtype_id = reader.unpack("B")
        if dtype_id not in _DTYPES:
            raise PackagedModelError(f"{path}: variable {name} has unsupported dtype id {dtype_id}.")
        variables[name] = np.frombuffer(reader.take(reader.unpack("I")), dtype=_DTYPES[dtype_id]).reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec_name, variables


def _split(weight: np.ndarray, bias: np.ndarray, dst: str, projs: list[str]) -> dict[str, np.ndarray]:
    """Split a fused projection (n*D, D) into n (D, D) projections named `projs`; `k_proj` has no bias."""
    out = {}
    for proj, w, b in zip(projs, np.split(weight, len(projs)), np.split(bias, len(projs)), strict=True):
        out[f"{dst}.{proj}.weight"] = w
        if proj != "k_proj":
            out[f"{dst}.{proj}.bias"] = b
        elif np.abs(b).max() > 0:
            raise PackagedModelError(f"{dst}: unexpected non-zero key bias; not a Whisper checkpoint?")
    return out


def _fused(v: dict, src: str, dst: str, projs: list[str]) -> dict[str, np.ndarray]:
    return _split(v[f"{src}/weight"], v[f"{src}/bias"], dst, projs)


def _linear(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": v[f"{src}/weight"], f"{dst}.bias": v[f"{src}/bias"]}


def _norm(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": v[f"{src}/gamma"], f"{dst}.bias": v[f"{src}/beta"]}


def _ffn(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {
        **_norm(v, f"{src}/layer_norm", f"{dst}.final_layer_norm"),
        **_linear(v, f"{src}/linear_0", f"{dst}.fc1"),
        **_linear(v, f"{src}/linear_1", f"{dst}.fc2"),
    }


def _self_attention(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {
        **_fused(v, f"{src}/self_attention/linear_0", f"{dst}.self_attn", ["q_proj", "k_proj", "v_proj"]),
        **_linear(v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj"),
        **_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"),
    }


def _cross_attention(v: dict, src: str, dst: str) -> dict[str, np.ndarray]:
    return {
        **_linear(v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj"),
        **_fused(v, f"{src}/attention/linear_1", f"{dst}.encoder_attn", ["k_proj", "v_proj"]),
        **_linear(v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj"),
        **_norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"),
    }


def _layers(v: dict, stack: str) -> int:
    return len({m.group(1) for k in v if (m := re.match(rf"{stack}/layer_(\d+)/", k))})


def map_state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 WhisperSpec variables → `WhisperForConditionalGeneration` state dict names."""
    sd = {
        **_linear(v, "encoder/conv1", "model.encoder.conv1"),
        **_linear(v, "encoder/conv2", "model.encoder.conv2"),
        "model.encoder.embed_positions.weight": v["encoder/position_encodings/encodings"],
        **_norm(v, "encoder/layer_norm", "model.encoder.layer_norm"),
        "model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"],
        "model.decoder.embed_positions.weight": v["decoder/position_encodings/encodings"],
        **_norm(v, "decoder/layer_norm", "model.decoder.layer_norm"),
    }
    for i in range(_layers(v, "encoder")):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        sd |= _self_attention(v, src, dst) | _ffn(v, f"{src}/ffn", dst)
    for i in range(_layers(v, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        sd |= _self_attention(v, src, dst) | _cross_attention(v, src, dst) | _ffn(v, f"{src}/ffn", dst)
    return sd


def _special_ids(tokenizer_json: Path) -> dict[str, int]:
    return {t["content"]: t["id"] for t in json.loads(tokenizer_json.read_text())["added_tokens"]}


def whisper_config(v: dict[str, np.ndarray], ct2_config: dict, special: dict[str, int]):
    """A WhisperConfig whose sizes are read off the weights' shapes."""
    from transformers import WhisperConfig

    vocab, d_model = v["decoder/embeddings/weight"].shape
    eot = special["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layers(v, "encoder"),
        decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=special["<|startoftranscript|>"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        tie_word_embeddings=True,
    )


def generation_config(config, ct2_config: dict, special: dict[str, int]):
    """Whisper's generation settings: language and task ids, no-timestamps token, suppressions."""
    from transformers import GenerationConfig

    by_id = {i: t for t, i in special.items()}
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        alignment_heads=ct2_config["alignment_heads"],
        is_multilingual=True,
        lang_to_id={by_id[i]: i for i in ct2_config["lang_ids"]},
        task_to_id={"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]},
        task="transcribe",  # default prompt: <|startoftranscript|><|lang|><|transcribe|><|notimestamps|>
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special["<|startofprev|>"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def convert(inputs: dict[str, Path], out: Path) -> None:
    """Write model (fp32 safetensors), feature extractor, tokenizer and generation config into `out`."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    spec_name, variables = read_ct2(inputs["model.bin"])
    if spec_name != "WhisperSpec":
        raise PackagedModelError(f"{inputs['model.bin']} holds a {spec_name}, not a WhisperSpec.")
    ct2_config = json.loads(inputs["config.json"].read_text())
    special = _special_ids(inputs["tokenizer.json"])
    config = whisper_config(variables, ct2_config, special)
    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(a.astype(np.float32)) for k, a in map_state_dict(variables).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise PackagedModelError(f"Whisper weights do not fit: missing {missing}, unexpected {unexpected}.")
    model.generation_config = generation_config(config, ct2_config, special)
    model.save_pretrained(out)

    shipped = out / ".work" / "tokenizer"  # a folder holding only tokenizer.json, for from_pretrained
    shipped.mkdir(parents=True)
    shutil.copy(inputs["tokenizer.json"], shipped / "tokenizer.json")
    WhisperTokenizer.from_pretrained(shipped).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
