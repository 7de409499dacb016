"""The artifact registry's rows: run-time program versions, the champion pointer and its audit trail.

Versions are immutable rows keyed by their number (an insert that finds the number taken
takes the next one). The pointer is one row holding the registry state (champion, history,
status changes) with a revision. A change locks that row for its whole transaction
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` takes the database
write lock), decides on the state it read, and writes the new state and its audit row
together, so concurrent changers queue and each decides on what the previous one left. A
change that no longer applies (a re-optimization's promotion when the champion it was
compared with has been replaced) is refused with its audit row kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from delegation.store.database import Database, Transaction, iso_utc
from delegation.store.schema import MIGRATIONS

POINTER_NAME = "champion"
_MAX_INSERT_ATTEMPTS = 20


@dataclass(frozen=True)
class StoredVersion:
    """One run-time version: the program's saved state and its manifest, both JSON text."""

    version: int
    program_json: str
    manifest_json: str


@dataclass(frozen=True)
class PointerState:
    """The registry state document and its revision (0: never written)."""

    state_json: str | None
    revision: int


@dataclass(frozen=True)
class ArtifactAuditRow:
    """One attempt to change the registry state: who, when, from where, champion before and after, outcome."""

    at: datetime
    who: str
    host: str
    action: str
    outcome: str
    from_champion: int | None
    to_champion: int | None
    from_revision: int | None
    to_revision: int | None
    reason: str


@dataclass(frozen=True)
class StateChange:
    """What a change decided on the state it read: the new state (None: refused) and the audit fields."""

    state_json: str | None
    from_champion: int | None
    to_champion: int | None
    outcome: str
    reason: str


class ArtifactStore:
    """SQL for the registry: versions, the pointer row and its audit rows."""

    def __init__(self, database: Database) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    # ---- versions ---------------------------------------------------------------------------

    def version_numbers(self) -> list[int]:
        with self.database.transaction() as tx:
            return sorted(int(row[0]) for row in tx.fetchall("SELECT version FROM artifact_versions"))

    def read_version(self, version: int) -> StoredVersion | None:
        with self.database.transaction() as tx:
            row = tx.fetchone("SELECT program_json, manifest_json FROM artifact_versions WHERE version = ?", (version,))
        return None if row is None else StoredVersion(version, row[0], row[1])

    def insert_version(self, floor: int, build: Callable[[int], tuple[str, str]]) -> StoredVersion:
        """Insert the version ``build(number)`` makes under the next free number above ``floor``."""
        for _ in range(_MAX_INSERT_ATTEMPTS):
            with self.database.transaction() as tx:
                row = tx.fetchone("SELECT MAX(version) FROM artifact_versions")
                number = max(floor, int(row[0]) if row and row[0] is not None else 0) + 1
                program_json, manifest_json = build(number)
                inserted = tx.execute(
                    "INSERT INTO artifact_versions (version, program_json, manifest_json, created_at)"
                    " VALUES (?,?,?,?) ON CONFLICT (version) DO NOTHING",
                    (number, program_json, manifest_json, iso_utc(datetime.now(UTC))),
                )
            if inserted == 1:
                return StoredVersion(number, program_json, manifest_json)
        raise RuntimeError(f"no free version number after {_MAX_INSERT_ATTEMPTS} attempts")

    # ---- the pointer ------------------------------------------------------------------------

    def read_pointer(self) -> PointerState:
        with self.database.transaction() as tx:
            row = tx.fetchone("SELECT state_json, revision FROM artifact_pointer WHERE name = ?", (POINTER_NAME,))
        return PointerState(None, 0) if row is None else PointerState(row[0], int(row[1]))

    def revision(self) -> int:
        """The pointer's revision: changes with every applied change (one primary-key read)."""
        return self.read_pointer().revision

    def change_pointer(
        self, decide: Callable[[str | None], StateChange], *, who: str, host: str, action: str
    ) -> ArtifactAuditRow:
        """Lock the pointer, let ``decide`` compute the change on what it holds, write it with its audit row."""
        now = datetime.now(UTC)
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO artifact_pointer (name, revision, state_json, updated_at, updated_by)"
                " VALUES (?,?,?,?,?) ON CONFLICT (name) DO NOTHING",
                (POINTER_NAME, 0, "{}", iso_utc(now), who),
            )
            lock = " FOR UPDATE" if self.database.dialect == "postgresql" else ""
            row = tx.fetchone(
                "SELECT state_json, revision FROM artifact_pointer WHERE name = ?" + lock, (POINTER_NAME,)
            )
            assert row is not None  # inserted above when missing
            revision = int(row[1])
            change = decide(row[0] if revision > 0 else None)
            applied = change.state_json is not None
            audit = ArtifactAuditRow(
                at=now,
                who=who,
                host=host,
                action=action,
                outcome=change.outcome,
                from_champion=change.from_champion,
                to_champion=change.to_champion if applied else change.from_champion,
                from_revision=revision,
                to_revision=revision + 1 if applied else None,
                reason=change.reason,
            )
            if applied:
                tx.execute(
                    "UPDATE artifact_pointer SET state_json = ?, revision = ?, updated_at = ?, updated_by = ?"
                    " WHERE name = ?",
                    (change.state_json, revision + 1, iso_utc(now), who, POINTER_NAME),
                )
            _insert_audit(tx, audit)
        return audit

    def history(self, limit: int | None = None) -> list[ArtifactAuditRow]:
        """Audit rows, oldest first (the last ``limit`` when given)."""
        query = (
            "SELECT at, who, host, action, outcome, from_champion, to_champion, from_revision, to_revision, reason"
            " FROM artifact_audit ORDER BY id DESC"
        )
        params: tuple[Any, ...] = ()
        if limit:
            query += " LIMIT ?"
            params = (limit,)
        with self.database.transaction() as tx:
            rows = tx.fetchall(query, params)
        return [ArtifactAuditRow(datetime.fromisoformat(row[0]), *row[1:]) for row in reversed(rows)]


def _insert_audit(tx: Transaction, row: ArtifactAuditRow) -> None:
    tx.execute(
        "INSERT INTO artifact_audit (at, who, host, action, outcome, from_champion, to_champion, from_revision,"
        " to_revision, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            iso_utc(row.at),
            row.who,
            row.host,
            row.action,
            row.outcome,
            row.from_champion,
            row.to_champion,
            row.from_revision,
            row.to_revision,
            row.reason,
        ),
    )
