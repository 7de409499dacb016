"""Read-only questions the tests ask of the stores, which the service itself never needs."""

from __future__ import annotations

import re
from pathlib import Path

from delegation.learning.training_set import TrainingSetStore
from delegation.store.decisions import DecisionStore

_DATA_NAME = re.compile(r"^train_v(\d+)\.jsonl$")


def count_decisions(store: DecisionStore, workflow_id: str | None = None) -> int:
    """How many records are stored (for one workflow id, or in all)."""
    return len(store.get(workflow_id)) if workflow_id is not None else len(store.decisions())


def rows(store: DecisionStore, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of a query on the store's own database (either backend; ``?`` placeholders)."""
    with store.database.transaction() as tx:
        return tx.fetchall(sql, params)


def orphan_training_files(store: TrainingSetStore) -> list[Path]:
    """Data files without a manifest: writes that crashed before committing (ignored by the store)."""
    if not store.directory.is_dir():
        return []
    committed = set(store.manifests())
    return sorted(
        path
        for path in store.directory.iterdir()
        if (match := _DATA_NAME.match(path.name)) and int(match.group(1)) not in committed
    )
