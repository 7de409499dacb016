"""delegation.devstack.model_file: the embedded model file is refused unless its size and SHA-256 match."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import delegation.devstack.model_file as local_model
from delegation.devstack.model_file import MODEL_FILENAME, ModelFileError, ensure_model_file, verify_model_file

CONTENT = b"GGUF" + bytes(range(256)) * 5


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(CONTENT)
    return path


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "model.gguf"
    with pytest.raises(ModelFileError) as info:
        verify_model_file(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_directory_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError):
        verify_model_file(tmp_path)


def test_wrong_size_is_refused(model_file: Path) -> None:
    assert len(CONTENT) != local_model.EXPECTED_SIZE
    with pytest.raises(ModelFileError) as info:
        verify_model_file(model_file)
    message = str(info.value)
    assert "bytes" in message
    assert "refusing" in message
    assert f"{len(CONTENT):,}" in message
    assert str(model_file) in message


def test_wrong_sha256_is_refused(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_model, "EXPECTED_SIZE", len(CONTENT))
    real = hashlib.sha256(CONTENT).hexdigest()
    assert real != local_model.EXPECTED_SHA256
    with pytest.raises(ModelFileError) as info:
        verify_model_file(model_file)
    message = str(info.value)
    assert "SHA-256" in message
    assert "refusing" in message
    assert real in message


def test_right_size_and_sha256_pass(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_model, "EXPECTED_SIZE", len(CONTENT))
    monkeypatch.setattr(local_model, "EXPECTED_SHA256", hashlib.sha256(CONTENT).hexdigest())
    assert verify_model_file(model_file) is None


def test_sha256_of_matches_hashlib(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_model, "_CHUNK", 100)  # several blocks
    assert local_model.sha256_of(model_file) == hashlib.sha256(CONTENT).hexdigest()


# --- ensure_model_file: joining the chunks ----------------------------------------------------


def _chunks(tmp_path: Path) -> list[Path]:
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    chunks = [b"first-chunk:" + bytes(range(200)), b"second-chunk:" * 7, b"third-and-last-chunk"]
    paths = []
    for index, data in enumerate(chunks, start=1):
        path = parts_dir / f"part{index:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _leftovers(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if "partial" in p.name)


def test_ensure_model_file_joins_chunks_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _chunks(tmp_path)
    joined = b"".join(p.read_bytes() for p in parts)
    monkeypatch.setattr(local_model, "part_paths", lambda: parts)
    monkeypatch.setattr(local_model, "_CHUNK", 16)  # exercise the block loop
    monkeypatch.setattr(local_model, "EXPECTED_SIZE", len(joined))
    monkeypatch.setattr(local_model, "EXPECTED_SHA256", hashlib.sha256(joined).hexdigest())
    cache_dir = tmp_path / "cache"

    target = ensure_model_file(cache_dir)

    assert target == cache_dir / MODEL_FILENAME
    assert target.read_bytes() == joined
    assert _leftovers(cache_dir) == []
    assert (cache_dir / (MODEL_FILENAME + ".verified")).is_file()

    # A second call reuses the verified file instead of joining again.
    monkeypatch.setattr(local_model, "part_paths", lambda: pytest.fail("joined again"))
    assert ensure_model_file(cache_dir) == target
    assert target.read_bytes() == joined


def test_ensure_model_file_refuses_a_wrong_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _chunks(tmp_path)
    joined = b"".join(p.read_bytes() for p in parts)
    monkeypatch.setattr(local_model, "part_paths", lambda: parts)
    monkeypatch.setattr(local_model, "EXPECTED_SIZE", len(joined))
    monkeypatch.setattr(local_model, "EXPECTED_SHA256", hashlib.sha256(b"something else").hexdigest())
    cache_dir = tmp_path / "cache"

    with pytest.raises(ModelFileError) as info:
        ensure_model_file(cache_dir)

    assert "SHA-256" in str(info.value)
    assert "refusing" in str(info.value)
    assert not (cache_dir / MODEL_FILENAME).exists()
    assert not (cache_dir / (MODEL_FILENAME + ".verified")).exists()
    assert _leftovers(cache_dir) == []
    assert list(cache_dir.iterdir()) == []


def test_ensure_model_file_refuses_parts_in_the_wrong_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _chunks(tmp_path)
    joined = b"".join(p.read_bytes() for p in parts)
    monkeypatch.setattr(local_model, "part_paths", lambda: list(reversed(parts)))
    monkeypatch.setattr(local_model, "EXPECTED_SIZE", len(joined))
    monkeypatch.setattr(local_model, "EXPECTED_SHA256", hashlib.sha256(joined).hexdigest())
    cache_dir = tmp_path / "cache"
    with pytest.raises(ModelFileError):
        ensure_model_file(cache_dir)
    assert list(cache_dir.iterdir()) == []
