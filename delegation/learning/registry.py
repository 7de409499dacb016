"""Versioned DSPy program artifacts and the champion pointer, in the store's database.

- Versions shipped with the code live in ``delegation/learning/artifacts/`` as files (read-only,
  committed): ``optimized_delegation_v{N}.json`` (DSPy state-only JSON, never pickle) and
  ``optimized_delegation_v{N}.manifest.json`` (version, SHA-256, data hashes, scores, status...).
- Versions written at run time (the optimizer, the monthly re-optimization) are rows of the
  store's database (``DATABASE_URL``, else the SQLite file under the data folder): the same
  program JSON and manifest, immutable once inserted, so every worker host sees them.
- The champion pointer, the previous champions and status changes are one row with a
  revision; promote, rollback and status changes lock it for their transaction and are
  audited (who, host, champion before and after, outcome). Workers poll the revision on each
  decision and load a new champion without a restart.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from delegation.core.settings import Settings
from delegation.deciders.calibration import ProgramCalibration
from delegation.deciders.dspy_decider import LoadedProgram, find_disallowed_state, load_program, load_program_state
from delegation.deciders.dspy_program import DemoLayout
from delegation.deciders.errors import ProgramLoadError
from delegation.store.artifacts import ArtifactAuditRow, ArtifactStore, StateChange
from delegation.store.database import Database, database_for, operator_name
from delegation.store.files import atomic_write_text, sha256_of, write_atomically

BUILTIN_DIR = Path(__file__).resolve().parent / "artifacts"
# Who the monthly re-optimization's promotions and rejections are audited as.
REOPTIMIZATION_ACTOR = "reoptimization"
Status = Literal["candidate", "champion", "retired", "rejected"]
_NAME = re.compile(r"^optimized_delegation_v(\d+)\.json$")
# write_atomically's temporary files for a version's program or manifest: ".<final name>.<random>".
_TEMP_PREFIX = ".optimized_delegation_v"


class RegistryError(ProgramLoadError):
    """A registry operation cannot be done; the message says why.

    A ``ProgramLoadError``: the serving side (``ChampionProgram``) keeps its last good program on it.
    """


class RegistryConflict(RegistryError):
    """A change was refused on the state it found under the lock (audited); the message says why."""


class _Any:
    """The type of ``ANY_CHAMPION``: promote whatever the current champion is."""


ANY_CHAMPION: Final = _Any()


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
    # Fitted by the optimizer on held-out answers; applied to the model's probabilities when serving.
    calibration: ProgramCalibration | None = None
    # Which demos each request's prefix holds (``DemoLayout``); versions written before it are shared.
    demo_layout: DemoLayout = "shared"
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

    def __init__(self, database: Database, builtin_dir: Path = BUILTIN_DIR) -> None:
        self.store = ArtifactStore(database)
        self.builtin_dir = builtin_dir

    def describe(self) -> str:
        """Where run-time versions and the pointer are kept."""
        return self.store.database.describe()

    # ---- reading ------------------------------------------------------------------------------

    def _builtin(self) -> dict[int, Path]:
        found: dict[int, Path] = {}
        if self.builtin_dir.is_dir():
            for path in self.builtin_dir.iterdir():
                match = _NAME.match(path.name)
                if match:
                    found[int(match.group(1))] = path
        return found

    def versions(self) -> list[int]:
        """Every version (shipped and run-time), ascending."""
        return sorted(set(self._builtin()) | set(self.store.version_numbers()))

    def _source(self, version: int) -> tuple[str, bytes, str]:
        """Where a version is, its program bytes and its manifest text; run-time rows before shipped files."""
        stored = self.store.read_version(version)
        if stored is not None:
            return f"version {version} in {self.describe()}", stored.program_json.encode("utf-8"), stored.manifest_json
        path = self._builtin().get(version)
        if path is None:
            raise RegistryError(f"no artifact version {version} (known: {self.versions()})")
        manifest_path = path.with_name(manifest_filename(version))
        try:
            return path.name, path.read_bytes(), manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RegistryError(f"artifact version {version} has no manifest {manifest_path}") from None
        except UnicodeDecodeError as err:
            raise RegistryError(f"manifest {manifest_path} is not UTF-8 (byte {err.start})") from None

    def _state(self) -> _RegistryState:
        return _parse_state(self.store.read_pointer().state_json, self.describe())

    def manifest(self, version: int) -> Manifest:
        """The manifest, with the status in force (the registry state over the manifest's own)."""
        where, _, text = self._source(version)
        try:
            manifest = Manifest.model_validate_json(text)
        except ValidationError as err:
            raise RegistryError(f"manifest of {where} is invalid: {err.error_count()} problem(s)") from None
        change = self._state().statuses.get(version)
        if change is not None:
            manifest = manifest.model_copy(update={"status": change.status, "status_reason": change.reason})
        return manifest

    def champion(self) -> int | None:
        """The current champion: the pointer, else the newest shipped version whose manifest says champion."""
        state = self._state()
        return state.champion if state.champion is not None else self._shipped_champion()

    def earlier_champions(self) -> list[int]:
        """Versions to fall back on when the champion cannot be served: earlier champions, newest first,
        then the shipped champion (never the current champion itself)."""
        state = self._state()
        current = self.champion()
        order = [*reversed(state.history), *([self._shipped_champion()] if state.champion is not None else [])]
        seen: list[int] = []
        for version in order:
            if version is not None and version != current and version not in seen:
                seen.append(version)
        return seen

    def _shipped_champion(self) -> int | None:
        shipped = []
        for version in self._builtin():
            try:
                if self.manifest(version).status == "champion":
                    shipped.append(version)
            except RegistryError:
                continue
        return max(shipped) if shipped else None

    def pointer_stamp(self) -> int:
        """Changes whenever the pointer changes (one primary-key read, cheap to poll per decision)."""
        return self.store.revision()

    def verify(self, version: int) -> tuple[bytes, Manifest]:
        """Refuse a missing, hash-mismatched or incompatible artifact; return its program bytes and manifest."""
        from delegation.deciders.dspy_program import DelegationSignature

        where, content, _ = self._source(version)
        manifest = self.manifest(version)
        if manifest.version != version:
            raise RegistryError(f"manifest of {where} says version {manifest.version}")
        digest = sha256_of(content)
        if digest != manifest.sha256:
            raise RegistryError(f"{where} has SHA-256 {digest[:12]}…, its manifest says {manifest.sha256[:12]}…")
        try:
            disallowed = find_disallowed_state(json.loads(content))
        except json.JSONDecodeError:
            raise RegistryError(f"{where} is not valid JSON") from None
        if disallowed:
            raise RegistryError(f"{where} holds state outside the allowlist at {disallowed[:5]}: refusing it")
        expected = list(DelegationSignature.fields)
        if manifest.signature_fields != expected:
            raise RegistryError(f"{where} was built for fields {manifest.signature_fields}, this code has {expected}")
        return content, manifest

    def load(self, version: int) -> LoadedProgram:
        """Verify and load a version; the loaded program reports ``optimized_delegation_v{N}``."""
        content, manifest = self.verify(version)
        try:
            return load_program_state(
                content.decode("utf-8"),
                program_filename(version).removesuffix(".json"),
                manifest.calibration,
                demo_layout=manifest.demo_layout,
            )
        except ProgramLoadError as err:
            raise RegistryError(str(err)) from None

    def history(self, limit: int | None = None) -> list[ArtifactAuditRow]:
        """Every attempted change of the pointer, oldest first (the last ``limit`` when given)."""
        return self.store.history(limit)

    # ---- writing ------------------------------------------------------------------------------

    def check_destination(self, directory: Path | None = None) -> None:
        """Refuse a destination other than the store (None) or the shipped folder, before any work.

        The shipped folder is swept first: what a writer killed mid-write left there goes.
        """
        if directory is None:
            return
        if directory.resolve() != self.builtin_dir.resolve():
            raise RegistryError(
                f"versions are written to {self.describe()}, or shipped to {self.builtin_dir}; not to {directory}"
            )
        directory.mkdir(parents=True, exist_ok=True)
        self.sweep_shipped_folder()
        if not os.access(directory, os.W_OK):
            raise RegistryError(f"{directory} is not writable")

    def sweep_shipped_folder(self) -> list[Path]:
        """Remove temporary files and program files without a manifest (a killed writer's leftovers).

        The manifest is written last, so a program file without one was never a version. One
        writer at a time ships to this folder (a developer's optimizer run).
        """
        removed: list[Path] = []
        if not self.builtin_dir.is_dir():
            return removed
        for path in sorted(self.builtin_dir.iterdir()):
            match = _NAME.match(path.name)
            orphan = match is not None and not path.with_name(manifest_filename(int(match.group(1)))).exists()
            if path.name.startswith(_TEMP_PREFIX) or orphan:
                path.unlink(missing_ok=True)
                removed.append(path)
                logger.warning("removed {} left by an interrupted write", path)
        return removed

    def write_version(
        self, program: Any, manifest_fields: dict[str, Any], *, directory: Path | None = None
    ) -> Manifest:
        """Save a program as a new version with its manifest; nothing is left behind if any step fails.

        Into the store by default; ``directory`` = the shipped folder writes the two files that
        ship with the code instead. Versions are never overwritten.
        """
        self.check_destination(directory)
        content = _servable_state(program)
        floor = max(self._builtin(), default=0)

        def manifest_for(version: int) -> Manifest:
            return Manifest.model_validate(
                {**manifest_fields, "version": version, "sha256": sha256_of(content), "created_at": datetime.now(UTC)}
            )

        if directory is not None:
            manifest = manifest_for(max(self.versions(), default=0) + 1)
            _ship(directory, content, manifest)
            return manifest
        stored = self.store.insert_version(
            floor,
            lambda version: (content.decode("utf-8"), manifest_for(version).model_dump_json(indent=2) + "\n"),
        )
        logger.info("wrote artifact version {} to {}", stored.version, self.describe())
        return Manifest.model_validate_json(stored.manifest_json)

    def set_status(self, version: int, status: Status, reason: str, *, who: str = "") -> None:
        """Record a status change (candidate, retired, rejected) without touching the artifact."""
        self.manifest(version)

        def decide(state: _RegistryState, champion: int | None) -> str | None:
            state.statuses[version] = _StatusChange(status=status, reason=reason, changed_at=datetime.now(UTC))
            return None

        self._change(f"status v{version} {status}", decide, who=who, reason=reason)

    def promote(
        self,
        version: int,
        reason: str = "promoted by operator",
        *,
        who: str = "",
        expect_champion: int | _Any | None = ANY_CHAMPION,
    ) -> None:
        """Make a verified version the champion; the previous one is retired and remembered for rollback.

        ``expect_champion``: promote only if the champion is still that version (the one the
        challenger was compared with); otherwise refuse, audited, with ``RegistryConflict``.
        """
        self.load(version)

        def decide(state: _RegistryState, champion: int | None) -> str | None:
            if expect_champion is not ANY_CHAMPION and champion != expect_champion:
                return (
                    f"refused: the champion is now version {champion}, not version {expect_champion} "
                    f"that version {version} was compared with"
                )
            if champion == version:
                return f"refused: version {version} is already the champion"
            now = datetime.now(UTC)
            if champion is not None:
                state.history.append(champion)
                state.statuses[champion] = _StatusChange(
                    status="retired", reason=f"replaced by version {version}", changed_at=now
                )
            state.champion = version
            state.statuses[version] = _StatusChange(status="champion", reason=reason, changed_at=now)
            return None

        self._change(f"promote v{version}", decide, who=who, reason=reason)

    def rollback(self, reason: str = "rolled back by operator", *, who: str = "") -> int:
        """Make the previous champion current again; the rolled-back version is marked rejected."""
        target = self._rollback_target(self._state(), self.champion())
        if target is not None:
            self.load(target)  # refuse a broken previous champion before taking the lock

        def decide(state: _RegistryState, champion: int | None) -> str | None:
            previous = self._rollback_target(state, champion)
            if previous is None:
                return "refused: no previous champion to roll back to"
            if previous != target:
                return f"refused: the history changed while rolling back (now to version {previous}): run it again"
            now = datetime.now(UTC)
            state.history = [v for v in state.history if v != champion][:-1]
            if champion is not None:
                state.statuses[champion] = _StatusChange(status="rejected", reason=reason, changed_at=now)
            state.champion = previous
            state.statuses[previous] = _StatusChange(
                status="champion", reason=f"restored by rollback from version {champion}", changed_at=now
            )
            return None

        self._change("rollback", decide, who=who, reason=reason)
        assert target is not None  # a change with no target was refused above
        return target

    @staticmethod
    def _rollback_target(state: _RegistryState, champion: int | None) -> int | None:
        history = [v for v in state.history if v != champion]
        return history[-1] if history else None

    def _change(
        self,
        action: str,
        decide: Callable[[_RegistryState, int | None], str | None],
        *,
        who: str,
        reason: str,
    ) -> ArtifactAuditRow:
        """Apply ``decide`` (which edits the state, or returns why it refuses) under the pointer's lock."""
        where = self.describe()
        shipped = self._shipped_champion()

        def on_state(state_json: str | None) -> StateChange:
            state = _parse_state(state_json, where)
            before = state.champion if state.champion is not None else shipped
            refusal = decide(state, before)
            if refusal is not None:
                return StateChange(None, before, before, refusal, reason)
            return StateChange(state.model_dump_json(), before, state.champion, "applied", reason)

        audit = self.store.change_pointer(
            on_state, who=who or operator_name(), host=socket.gethostname(), action=action
        )
        if audit.outcome != "applied":
            raise RegistryConflict(audit.outcome.removeprefix("refused: "))
        return audit


def registry_for(settings: Settings) -> ArtifactRegistry:
    """The registry in the configured store (``DATABASE_URL``, else the SQLite file under the data folder)."""
    return ArtifactRegistry(database_for(settings))


def _parse_state(state_json: str | None, where: str) -> _RegistryState:
    if state_json is None:
        return _RegistryState()
    try:
        return _RegistryState.model_validate_json(state_json)
    except ValidationError as err:
        raise RegistryError(f"registry state in {where} is unreadable: {err.error_count()} problem(s)") from None


def _ship(directory: Path, content: bytes, manifest: Manifest) -> None:
    """Write a version's two files into the shipped folder; the program file is created exclusively."""
    target = directory / program_filename(manifest.version)
    try:
        write_atomically(target, lambda handle: handle.write(content), exclusive=True)
    except FileExistsError:
        raise RegistryError(f"{target} already exists; versions are never overwritten") from None
    try:
        atomic_write_text(directory / manifest_filename(manifest.version), manifest.model_dump_json(indent=2) + "\n")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    logger.info("shipped artifact version {} to {}", manifest.version, target)


def _servable_state(program: Any) -> bytes:
    """The program's saved state, refused now if serving would refuse it later."""
    with tempfile.TemporaryDirectory(prefix="delegation-program-") as folder:
        path = Path(folder) / "program.json"
        program.save(str(path))  # dspy writes to a path, not a stream
        load_program(path)
        return path.read_bytes()
