"""The decision store: one SQLite row per (workflow_id, run_id), one TRAINING_DATA line per row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from delegation.core.models import DecisionRecord, DelegationDecision, DelegationRequest
from delegation.store.database import Database
from delegation.store.decisions import (
    STALE_LOG_CLAIM,
    TRAINING_DATA_MARKER,
    DecisionStore,
    read_training_log,
    training_log_line,
)
from tests.support.factories import decision_record
from tests.support.store_queries import count_decisions, rows


def _decision_record(
    *,
    workflow_id: str = "delegation-task-1",
    run_id: str = "run-1",
    decision: DelegationDecision | None = None,
    error: str | None = None,
    decided_at: datetime | None = None,
) -> DecisionRecord:
    task_id = workflow_id.removeprefix("delegation-")
    request = DelegationRequest(task_id=task_id, title="Sign the supplier contract", description="By Friday — €5k")
    if decision is None and error is None:
        decision = DelegationDecision(assignee_id="legal-counsel", confidence=0.8, reasoning="a contract")
    return decision_record(
        request,
        workflow_id=workflow_id,
        run_id=run_id,
        decision=decision,
        latency_ms=20.0,
        error=error,
        bucket=123,
        decided_at=decided_at or datetime.now(UTC),
    )


@pytest.fixture
def store(database: Database, tmp_path: Path) -> DecisionStore:
    return DecisionStore(database, tmp_path / "logs" / "decisions.log")


def _log_lines(store: DecisionStore) -> list[str]:
    if not store.log_path.exists():
        return []
    return store.log_path.read_text(encoding="utf-8").splitlines()


def test_recording_twice_stores_one_row_and_logs_one_line(store: DecisionStore) -> None:
    record = _decision_record()
    assert store.record(record, log_to_file=True) == (True, True)
    assert store.record(record, log_to_file=True) == (False, False)
    assert count_decisions(store) == 1
    assert count_decisions(store, record.workflow_id) == 1
    lines = _log_lines(store)
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["marker"] == TRAINING_DATA_MARKER == "TRAINING_DATA"
    assert line["workflow_id"] == record.workflow_id
    assert line["run_id"] == record.run_id
    assert line["decision"]["assignee_id"] == "legal-counsel"
    assert line["request"]["description"] == "By Friday — €5k"  # non-ASCII kept as UTF-8


def test_log_line_parses_back_into_the_record(store: DecisionStore) -> None:
    record = _decision_record()
    store.record(record, log_to_file=True)
    line = json.loads(_log_lines(store)[0])
    assert line.pop("marker") == "TRAINING_DATA"
    assert DecisionRecord.model_validate(line) == record


def test_without_logging_the_row_is_stored_but_no_line_written(store: DecisionStore) -> None:
    record = _decision_record()
    assert store.record(record, log_to_file=False) == (True, False)
    assert count_decisions(store) == 1
    assert _log_lines(store) == []


def test_later_logging_of_an_unlogged_row_writes_the_line_once(store: DecisionStore) -> None:
    record = _decision_record()
    store.record(record, log_to_file=False)
    assert store.record(record, log_to_file=True) == (False, True)
    assert store.record(record, log_to_file=True) == (False, False)
    assert count_decisions(store) == 1
    lines = _log_lines(store)
    assert len(lines) == 1
    assert json.loads(lines[0])["workflow_id"] == record.workflow_id


def test_a_log_write_that_fails_gives_its_claim_back_and_the_retry_writes_the_line(store: DecisionStore) -> None:
    record = _decision_record()
    store.log_path.parent.mkdir(parents=True)
    store.log_path.mkdir()  # a folder where the log file should be: the append fails (for root too)
    with pytest.raises(IsADirectoryError):
        store.record(record, log_to_file=True)
    store.log_path.rmdir()
    assert store.record(record, log_to_file=True) == (False, True)  # the immediate retry writes it
    assert len(_log_lines(store)) == 1


def test_a_claim_left_by_a_dead_attempt_is_written_by_the_retry(store: DecisionStore) -> None:
    """The attempt claimed the line and died before marking it: the retry must not lose the line."""
    record = _decision_record()
    store.record(record, log_to_file=False)
    stale = (datetime.now(UTC) - STALE_LOG_CLAIM - timedelta(seconds=1)).isoformat()
    with store.database.transaction() as tx:
        tx.execute("UPDATE decisions SET logged = 2, log_claimed_at = ?", (stale,))
    assert store.record(record, log_to_file=True) == (False, True)
    assert store.record(record, log_to_file=True) == (False, False)
    assert len(_log_lines(store)) == 1


def test_a_fresh_claim_of_another_attempt_is_left_to_it(store: DecisionStore) -> None:
    record = _decision_record()
    store.record(record, log_to_file=False)
    with store.database.transaction() as tx:
        tx.execute("UPDATE decisions SET logged = 2, log_claimed_at = ?", (datetime.now(UTC).isoformat(),))
    assert store.record(record, log_to_file=True) == (False, False)
    assert _log_lines(store) == []


def test_reading_the_log_drops_repeated_lines_and_counts_foreign_ones(store: DecisionStore) -> None:
    first, second = _decision_record(run_id="run-1"), _decision_record(workflow_id="delegation-task-2")
    store.record(first, log_to_file=True)
    store.record(second, log_to_file=True)
    with store.log_path.open("a", encoding="utf-8") as handle:
        handle.write(training_log_line(first) + "\n")  # what a crash between append and mark leaves
        handle.write('{"marker":"TRAINING_DATA","workflow_id":"torn\n')
    records, unreadable = read_training_log(store.log_path)
    assert records == [first, second]
    assert unreadable == 1


def test_failed_decisions_are_stored_too(store: DecisionStore) -> None:
    record = _decision_record(workflow_id="delegation-task-9", error="both deciders failed")
    assert record.decision is None
    assert store.record(record, log_to_file=True) == (True, True)
    (stored,) = store.get("delegation-task-9")
    assert stored == record
    assert stored.decision is None and stored.error == "both deciders failed"
    (row,) = rows(
        store, "SELECT assignee_id, confidence, error FROM decisions WHERE workflow_id = ?", ("delegation-task-9",)
    )
    assert row == (None, None, "both deciders failed")
    assert json.loads(_log_lines(store)[0])["decision"] is None


def test_two_runs_of_one_workflow_are_two_rows(store: DecisionStore) -> None:
    start = datetime.now(UTC)
    first = _decision_record(run_id="run-a", decided_at=start)
    second = _decision_record(run_id="run-b", decided_at=start + timedelta(seconds=1))
    assert store.record(second, log_to_file=True) == (True, True)
    assert store.record(first, log_to_file=True) == (True, True)
    assert count_decisions(store, "delegation-task-1") == 2
    assert len(_log_lines(store)) == 2
    assert store.get("delegation-task-1") == [first, second]  # oldest first


def test_get_returns_records_for_one_workflow_only(store: DecisionStore) -> None:
    one = _decision_record(workflow_id="delegation-task-1")
    other = _decision_record(workflow_id="delegation-task-2")
    store.record(one, log_to_file=False)
    store.record(other, log_to_file=False)
    assert store.get("delegation-task-1") == [one]
    assert store.get("delegation-task-2") == [other]
    assert store.get("delegation-unknown") == []
    assert count_decisions(store) == 2
    assert count_decisions(store, "delegation-unknown") == 0


def test_rows_survive_a_new_store_on_the_same_files(store: DecisionStore) -> None:
    record = _decision_record()
    store.record(record, log_to_file=True)
    reopened = DecisionStore(store.database, store.log_path)
    assert reopened.get(record.workflow_id) == [record]
    assert reopened.record(record, log_to_file=True) == (False, False)
    assert len(_log_lines(reopened)) == 1
