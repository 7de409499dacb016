"""Read-only questions the tests ask of the stores, which the service itself never needs."""

from __future__ import annotations

from delegation.store.decisions import DecisionStore


def count_decisions(store: DecisionStore, workflow_id: str | None = None) -> int:
    """How many records are stored (for one workflow id, or in all)."""
    return len(store.get(workflow_id)) if workflow_id is not None else len(store.decisions())


def rows(store: DecisionStore, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of a query on the store's own database (either backend; ``?`` placeholders)."""
    with store.database.transaction() as tx:
        return tx.fetchall(sql, params)
