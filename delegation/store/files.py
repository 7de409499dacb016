"""File helpers (standard library only): atomic writes, whole-line appends, content hashes.

Atomic: readers see the old file or the new one, never a part.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_HASH_BLOCK = 8 * 1024 * 1024


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, exclusive: bool = False) -> None:
    """Let ``write`` fill a temporary file next to ``path``, flush it to disk, then put it in place.

    ``exclusive`` links the file into place instead of replacing: ``FileExistsError`` rather
    than overwrite an existing ``path`` (immutable versions).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def sha256_of(source: Path | bytes) -> str:
    """The SHA-256 hex digest of some bytes, or of a file's content (read in 8 MiB blocks)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, replacing any old file."""
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def append_line(path: Path, line: str) -> None:
    """Append one whole line to a log file (created 0640 if missing) and fsync it before returning.

    Append mode and one ``write()`` per line, so concurrent writers do not interleave lines; a
    short write (a full disk) is finished or raises, never left as half a line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
