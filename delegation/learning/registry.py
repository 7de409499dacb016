"""Versioned DSPy program artifacts and the champion pointer.

- ``optimized_delegation_v{N}.json``: the program, DSPy state-only JSON (never pickle).
- ``optimized_delegation_v{N}.manifest.json``: version, SHA-256, data hashes, scores, status...

Versions shipped with the code live in ``delegation/learning/artifacts/`` (read-only, committed); versions
written at run time go to ``ARTIFACT_DIR`` (default ``data/artifacts``), never overwriting one.
The champion pointer and status changes live in ``ARTIFACT_DIR/registry.json``, replaced
atomically, so promoting or rolling back never touches the git tree.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from delegation.deciders.calibration import Calibration
from delegation.deciders.dspy_decider import LoadedProgram, find_forbidden_lm_keys, load_program
from delegation.deciders.errors import ProgramLoadError
from delegation.store.files import atomic_write_text, sha256_of, write_atomically

BUILTIN_DIR = Path(__file__).resolve().parent / "artifacts"
Status = Literal["candidate", "champion", "retired", "rejected"]
_NAME = re.compile(r"^optimized_delegation_v(\d+)\.json$")


class RegistryError(ProgramLoadError):
    """A registry operation cannot be done; the message says why.

    A ``ProgramLoadError``: the serving side (``ChampionProgram``) keeps its last good program on it.
    """


class Manifest(BaseModel):
    """What produced a program version, how good it was, and where it stands."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    sha256: str
    created_at: datetime
    optimizer: str
    optimizer_params: dict[str, Any]
    train_sha256: str
    dev_sha256: str
    train_size: int
    dev_size: int
    base_dev_score: float
    optimized_dev_score: float
    model: str
    dspy_version: str
    signature_fields: list[str]
    parent_version: int | None
    # Fitted on dev by the optimizer; applied to the model's probabilities when serving.
    calibration: Calibration | None = None
    status: Status
    status_reason: str


class _StatusChange(BaseModel):
    status: Status
    reason: str
    changed_at: datetime


class _RegistryState(BaseModel):
    champion: int | None = None
    history: list[int] = Field(default_factory=list, description="Champions before the current one, oldest first.")
    statuses: dict[int, _StatusChange] = Field(default_factory=dict)


def program_filename(version: int) -> str:
    return f"optimized_delegation_v{version}.json"


def manifest_filename(version: int) -> str:
    return f"optimized_delegation_v{version}.manifest.json"


class ArtifactRegistry:
    """Lists, verifies, writes and promotes program versions."""

    def __init__(self, artifact_dir: Path, builtin_dir: Path = BUILTIN_DIR) -> None:
        self.artifact_dir = artifact_dir
        self.builtin_dir = builtin_dir
        self.state_path = artifact_dir / "registry.json"
        self._lock = threading.Lock()

    # ---- reading ------------------------------------------------------------------------------

    def _locate(self, version: int) -> Path | None:
        for folder in (self.artifact_dir, self.builtin_dir):
            path = folder / program_filename(version)
            if path.is_file():
                return path
        return None

    def versions(self) -> list[int]:
        """Every version with a program file, ascending."""
        found: set[int] = set()
        for folder in (self.builtin_dir, self.artifact_dir):
            if folder.is_dir():
                for path in folder.iterdir():
                    match = _NAME.match(path.name)
                    if match:
                        found.add(int(match.group(1)))
        return sorted(found)

    def _state(self) -> _RegistryState:
        try:
            return _RegistryState.model_validate_json(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _RegistryState()
        except (ValidationError, OSError) as err:
            raise RegistryError(f"registry state {self.state_path} is unreadable: {err}") from None

    def manifest(self, version: int) -> Manifest:
        """The manifest, with the status in force (state file over the manifest's own)."""
        path = self._locate(version)
        if path is None:
            raise RegistryError(f"no artifact version {version} (known: {self.versions()})")
        manifest_path = path.with_name(manifest_filename(version))
        try:
            manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"artifact version {version} has no manifest {manifest_path}") from None
        except ValidationError as err:
            raise RegistryError(f"manifest {manifest_path} is invalid: {err.error_count()} problem(s)") from None
        change = self._state().statuses.get(version)
        if change is not None:
            manifest = manifest.model_copy(update={"status": change.status, "status_reason": change.reason})
        return manifest

    def champion(self) -> int | None:
        """The current champion: the state file's pointer, else the newest built-in champion."""
        state = self._state()
        if state.champion is not None:
            return state.champion
        shipped = []
        for version in self.versions():
            path = self._locate(version)
            if path is not None and path.parent == self.builtin_dir:
                try:
                    if self.manifest(version).status == "champion":
                        shipped.append(version)
                except RegistryError:
                    continue
        return max(shipped) if shipped else None

    def pointer_stamp(self) -> tuple[int, int] | None:
        """Changes whenever the champion pointer is rewritten (cheap to poll)."""
        try:
            stat = self.state_path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def verify(self, version: int) -> tuple[Path, Manifest]:
        """Refuse a missing, hash-mismatched or incompatible artifact; return its path and manifest."""
        from delegation.deciders.dspy_program import DelegationSignature

        path = self._locate(version)
        if path is None:
            raise RegistryError(f"artifact version {version} is missing")
        manifest = self.manifest(version)
        if manifest.version != version:
            raise RegistryError(f"manifest of {path.name} says version {manifest.version}")
        content = path.read_bytes()
        digest = sha256_of(content)
        if digest != manifest.sha256:
            raise RegistryError(f"{path.name} has SHA-256 {digest[:12]}…, its manifest says {manifest.sha256[:12]}…")
        try:
            forbidden = find_forbidden_lm_keys(json.loads(content))
        except json.JSONDecodeError:
            raise RegistryError(f"{path.name} is not valid JSON") from None
        if forbidden:
            raise RegistryError(f"{path.name} tries to set LM settings at {forbidden}: refusing it")
        expected = list(DelegationSignature.fields)
        if manifest.signature_fields != expected:
            raise RegistryError(
                f"{path.name} was built for fields {manifest.signature_fields}, this code has {expected}"
            )
        return path, manifest

    def load(self, version: int) -> LoadedProgram:
        """Verify and load a version; the loaded program reports ``optimized_delegation_v{N}``."""
        path, manifest = self.verify(version)
        try:
            return load_program(path, manifest.calibration)
        except ProgramLoadError as err:
            raise RegistryError(str(err)) from None

    # ---- writing ------------------------------------------------------------------------------

    @contextmanager
    def _locked_state(self) -> Iterator[_RegistryState]:
        with self._lock:
            state = self._state()
            yield state
            atomic_write_text(self.state_path, state.model_dump_json(indent=2) + "\n")

    def next_version(self) -> int:
        versions = self.versions()
        return (versions[-1] + 1) if versions else 1

    def writable_folder(self, directory: Path | None = None) -> Path:
        """The folder a new version goes to; refuses any other than ARTIFACT_DIR or the built-in one."""
        folder = directory or self.artifact_dir
        if folder.resolve() not in (self.artifact_dir.resolve(), self.builtin_dir.resolve()):
            raise RegistryError(f"versions are written to {self.artifact_dir} or {self.builtin_dir}, not {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise RegistryError(f"{folder} is not writable")
        return folder

    def write_version(
        self, program: Any, manifest_fields: dict[str, Any], *, directory: Path | None = None
    ) -> Manifest:
        """Save a program as a new version with its manifest; nothing is left behind if any step fails.

        Versions are never overwritten: the program file is created exclusively.
        """
        folder = self.writable_folder(directory)
        with self._lock:
            version = self.next_version()
            target = folder / program_filename(version)
            manifest_path = folder / manifest_filename(version)
            content = _servable_state(program, folder)
            manifest = Manifest.model_validate(
                {**manifest_fields, "version": version, "sha256": sha256_of(content), "created_at": datetime.now(UTC)}
            )
            try:
                write_atomically(target, lambda handle: handle.write(content), exclusive=True)
            except FileExistsError:
                raise RegistryError(f"{target} already exists; versions are never overwritten") from None
            try:
                atomic_write_text(manifest_path, manifest.model_dump_json(indent=2) + "\n")
            except BaseException:
                target.unlink(missing_ok=True)
                raise
        logger.info("wrote artifact version {} to {}", version, target)
        return manifest

    def set_status(self, version: int, status: Status, reason: str) -> None:
        """Record a status change (candidate, retired, rejected) without touching the artifact."""
        self.manifest(version)
        with self._locked_state() as state:
            state.statuses[version] = _StatusChange(status=status, reason=reason, changed_at=datetime.now(UTC))

    def promote(self, version: int, reason: str = "promoted by operator") -> None:
        """Make a verified version the champion; the previous one is retired and remembered for rollback."""
        self.load(version)
        previous = self.champion()
        if previous == version:
            raise RegistryError(f"version {version} is already the champion")
        with self._locked_state() as state:
            now = datetime.now(UTC)
            if previous is not None:
                state.history.append(previous)
                state.statuses[previous] = _StatusChange(
                    status="retired", reason=f"replaced by version {version}", changed_at=now
                )
            state.champion = version
            state.statuses[version] = _StatusChange(status="champion", reason=reason, changed_at=now)

    def rollback(self, reason: str = "rolled back by operator") -> int:
        """Make the previous champion current again; the rolled-back version is marked rejected."""
        state = self._state()
        current = self.champion()
        history = [v for v in state.history if v != current]
        if not history:
            raise RegistryError("no previous champion to roll back to")
        target = history[-1]
        self.load(target)
        with self._locked_state() as state:
            now = datetime.now(UTC)
            state.history = [v for v in state.history if v != current][:-1]
            if current is not None:
                state.statuses[current] = _StatusChange(status="rejected", reason=reason, changed_at=now)
            state.champion = target
            state.statuses[target] = _StatusChange(
                status="champion", reason=f"restored by rollback from version {current}", changed_at=now
            )
        return target


def _servable_state(program: Any, folder: Path) -> bytes:
    """The program's saved state, refused now if serving would refuse it later."""
    fd, name = tempfile.mkstemp(prefix=".program-", suffix=".json", dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        program.save(str(path))  # dspy writes to a path, not a stream
        load_program(path)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
