"""The training-set versions' rows: one per version, its manifest and its examples (JSONL), immutable.

The insert is the commit: a version is there with both parts or not at all. Two writers that
compute the same next version race on the primary key; the loser's insert does nothing and it
recomputes on the new latest version.
"""

from __future__ import annotations

from datetime import UTC, datetime

from delegation.store.database import Database, iso_utc
from delegation.store.schema import MIGRATIONS


class TrainingSetRows:
    """SQL for the training-set versions."""

    def __init__(self, database: Database) -> None:
        self.database = database
        database.migrate(MIGRATIONS)

    def manifests(self) -> list[tuple[int, str]]:
        """Every version's number and manifest JSON, ascending."""
        with self.database.transaction() as tx:
            rows = tx.fetchall("SELECT version, manifest_json FROM training_sets ORDER BY version")
        return [(int(version), text) for version, text in rows]

    def examples(self, version: int) -> str | None:
        """A version's examples as JSONL text, or None when there is no such version."""
        with self.database.transaction() as tx:
            row = tx.fetchone("SELECT examples_jsonl FROM training_sets WHERE version = ?", (version,))
        return None if row is None else str(row[0])

    def insert(self, version: int, manifest_json: str, examples_jsonl: str) -> bool:
        """Add a version; False (nothing written) when another writer took the number first."""
        with self.database.transaction() as tx:
            return (
                tx.execute(
                    "INSERT INTO training_sets (version, manifest_json, examples_jsonl, created_at)"
                    " VALUES (?,?,?,?) ON CONFLICT (version) DO NOTHING",
                    (version, manifest_json, examples_jsonl, iso_utc(datetime.now(UTC))),
                )
                == 1
            )
