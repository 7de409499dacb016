"""The live flags of an environment and their audit trail, in the store's database.

One row per environment holds the flag values a change set, with a version. A change is a
compare-and-set on that version: read, compute, then ``UPDATE … WHERE version = read`` in one
transaction with its audit row. When another changer got there first the update touches no
row: that attempt is audited as ``conflict`` and the change is recomputed on the new values,
up to ``MAX_ATTEMPTS`` times, then refused with ``FlagConflict``. Nothing is lost either way:
the final row and the audit trail agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from delegation.store.database import Database, Transaction, iso_utc
from delegation.store.schema import MIGRATIONS

MAX_ATTEMPTS = 5


class FlagConflict(RuntimeError):
    """Other changes kept landing first; this one was not applied (and its attempts are audited)."""


@dataclass(frozen=True)
class LiveFlags:
    """The values a change set (flags not set come from the environment), and which version they are."""

    values: dict[str, Any]
    version: int
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class FlagAuditRow:
    """One attempt to change the flags: who, when, from where, from and to what, why, and how it ended."""

    at: datetime
    who: str
    host: str
    action: str
    environment: str
    outcome: str
    from_version: int | None
    to_version: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str


# What a change computes from the values it read: the new values, and the full flags before and after;
# None when the change no longer applies to them (a rollback that another one already made).
Resolve = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None]


class FlagStore:
    """Live flags and audit rows of one environment."""

    def __init__(self, database: Database, environment: str) -> None:
        self.database = database
        self.environment = environment
        database.migrate(MIGRATIONS)

    def read(self) -> LiveFlags | None:
        """The live values, or None when nothing was ever set in this environment."""
        with self.database.transaction() as tx:
            row = tx.fetchone(
                "SELECT flags_json, version, updated_at, updated_by FROM live_flags WHERE environment = ?",
                (self.environment,),
            )
        if row is None:
            return None
        values, version, updated_at, updated_by = row
        return LiveFlags(json.loads(values), int(version), datetime.fromisoformat(updated_at), updated_by)

    def change(self, resolve: Resolve, *, who: str, host: str, action: str, reason: str) -> FlagAuditRow | None:
        """Apply the change ``resolve`` computes from the current values, by compare-and-set; its audit row.

        None, with nothing written, when ``resolve`` finds that the change no longer applies.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            current = self.read()
            values = current.values if current is not None else {}
            resolved = resolve(values)
            if resolved is None:
                return None
            new_values, before, after = resolved
            now = datetime.now(UTC)
            from_version = current.version if current is not None else 0
            row = FlagAuditRow(
                at=now,
                who=who,
                host=host,
                action=action,
                environment=self.environment,
                outcome="applied",
                from_version=from_version,
                to_version=from_version + 1,
                before=before,
                after=after,
                reason=reason,
            )
            with self.database.transaction() as tx:
                if current is None:
                    changed = self._insert_first(tx, new_values, now, who)
                else:
                    changed = tx.execute(
                        "UPDATE live_flags SET version = ?, flags_json = ?, updated_at = ?, updated_by = ?"
                        " WHERE environment = ? AND version = ?",
                        (
                            from_version + 1,
                            json.dumps(new_values, sort_keys=True),
                            iso_utc(now),
                            who,
                            self.environment,
                            from_version,
                        ),
                    )
                if changed == 1:
                    self._audit(tx, row)
                    return row
            # Someone else's change landed between the read and the write: audit it, recompute.
            gave_up = attempt == MAX_ATTEMPTS
            outcome = "conflict: gave up" if gave_up else "conflict: retried"
            with self.database.transaction() as tx:
                self._audit(tx, _with(row, outcome=outcome, to_version=None))
        raise FlagConflict(
            f"the flags of {self.environment!r} changed {MAX_ATTEMPTS} times while {action!r} was being applied; "
            "nothing was changed by it: run it again"
        )

    def bootstrap(self, values: dict[str, Any], after: dict[str, Any], *, who: str, host: str, reason: str) -> bool:
        """Create the environment's first row from ``values`` (audited); False when it already had one."""
        now = datetime.now(UTC)
        with self.database.transaction() as tx:
            inserted = self._insert_first(tx, values, now, who)
            if inserted == 1:
                self._audit(
                    tx,
                    FlagAuditRow(
                        at=now,
                        who=who,
                        host=host,
                        action="bootstrap",
                        environment=self.environment,
                        outcome="applied",
                        from_version=0,
                        to_version=1,
                        before={},
                        after=after,
                        reason=reason,
                    ),
                )
        return inserted == 1

    def _insert_first(self, tx: Transaction, values: dict[str, Any], now: datetime, who: str) -> int:
        """Create the environment's row at version 1; 0 when another changer created it first."""
        return tx.execute(
            "INSERT INTO live_flags (environment, version, flags_json, updated_at, updated_by)"
            " VALUES (?,?,?,?,?) ON CONFLICT (environment) DO NOTHING",
            (self.environment, 1, json.dumps(values, sort_keys=True), iso_utc(now), who),
        )

    def _audit(self, tx: Any, row: FlagAuditRow) -> None:
        tx.execute(
            "INSERT INTO flag_audit (at, who, host, action, environment, outcome, from_version, to_version,"
            " before_json, after_json, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                iso_utc(row.at),
                row.who,
                row.host,
                row.action,
                row.environment,
                row.outcome,
                row.from_version,
                row.to_version,
                json.dumps(row.before, sort_keys=True),
                json.dumps(row.after, sort_keys=True),
                row.reason,
            ),
        )

    def history(self, limit: int | None = None) -> list[FlagAuditRow]:
        """Audit rows of this environment, oldest first (the last ``limit`` when given)."""
        query = (
            "SELECT at, who, host, action, environment, outcome, from_version, to_version, before_json, after_json,"
            " reason FROM flag_audit WHERE environment = ? ORDER BY id DESC"
        )
        params: tuple[Any, ...] = (self.environment,)
        if limit:
            query += " LIMIT ?"
            params = (self.environment, limit)
        with self.database.transaction() as tx:
            rows = tx.fetchall(query, params)
        return [_audit_row(row) for row in reversed(rows)]


def _audit_row(row: tuple[Any, ...]) -> FlagAuditRow:
    at, who, host, action, environment, outcome, from_version, to_version, before, after, reason = row
    return FlagAuditRow(
        at=datetime.fromisoformat(at),
        who=who,
        host=host,
        action=action,
        environment=environment,
        outcome=outcome,
        from_version=from_version,
        to_version=to_version,
        before=json.loads(before),
        after=json.loads(after),
        reason=reason,
    )


def _with(row: FlagAuditRow, **changes: Any) -> FlagAuditRow:
    from dataclasses import replace

    return replace(row, **changes)
