"""Feedback on stored decisions: idempotent storage, naming by task or workflow id, validation, time windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from delegation.core.models import (
    DecisionRecord,
    DelegationDecision,
    DelegationFeedback,
    DelegationRequest,
)
from delegation.store.database import Database
from delegation.store.decisions import DecisionStore, InvalidFeedback, UnknownDecision
from tests.support.factories import CUSTOM_TEAM, decision_record
from tests.support.store_queries import rows

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEFAULT_TEAM_IDS = [
    "self",
    "backend-engineer",
    "product-designer",
    "finance-manager",
    "legal-counsel",
    "people-ops",
    "research-agent",
    "it-ops-agent",
]


@pytest.fixture
def store(database: Database, tmp_path: Path) -> DecisionStore:
    return DecisionStore(database, tmp_path / "logs" / "decisions.log")


def _record(
    task_id: str = "task-1",
    *,
    run_id: str = "run-1",
    assignee: str = "finance-manager",
    decided_at: datetime = T0,
    **request_fields: object,
) -> DecisionRecord:
    request = DelegationRequest.model_validate(
        {"task_id": task_id, "title": "Pay the invoice from the print shop", **request_fields}
    )
    return decision_record(
        request,
        run_id=run_id,
        decision=DelegationDecision(assignee_id=assignee, confidence=0.8, reasoning="an invoice"),
        decided_at=decided_at,
    )


def _feedback_rows(store: DecisionStore) -> list[tuple]:
    return rows(store, "SELECT workflow_id, run_id, outcome, correct_assignee_id, comment, received_at FROM feedback")


# ---- storing ----------------------------------------------------------------------------------


def test_feedback_stored_then_unchanged_then_updated(store: DecisionStore) -> None:
    record = _record()
    store.record(record, log_to_file=False)
    feedback = DelegationFeedback(task_id="task-1", outcome="reassigned", correct_assignee_id="legal-counsel")

    first = store.record_feedback(feedback, T0 + timedelta(minutes=1))
    assert first.result == "stored"
    assert (first.workflow_id, first.run_id, first.task_id) == ("delegation-task-1", "run-1", "task-1")
    assert (first.outcome, first.correct_assignee_id) == ("reassigned", "legal-counsel")
    assert first.decided_assignee_id == "finance-manager" and first.variant == "dspy"

    again = store.record_feedback(feedback, T0 + timedelta(minutes=2))
    assert again.result == "unchanged"
    rows = _feedback_rows(store)
    assert len(rows) == 1
    # A repeat changes nothing, not even the arrival time.
    assert rows[0][5] == (T0 + timedelta(minutes=1)).isoformat(timespec="microseconds")

    changed = DelegationFeedback(task_id="task-1", outcome="failed", correct_assignee_id="people-ops", comment="late")
    updated = store.record_feedback(changed, T0 + timedelta(minutes=3))
    assert updated.result == "updated"
    assert updated.outcome == "failed" and updated.correct_assignee_id == "people-ops"
    rows = _feedback_rows(store)
    assert rows == [
        (
            "delegation-task-1",
            "run-1",
            "failed",
            "people-ops",
            "late",
            (T0 + timedelta(minutes=3)).isoformat(timespec="microseconds"),
        )
    ]
    (stored,) = store.decisions()
    assert stored.feedback is not None
    assert stored.feedback.feedback.outcome == "failed"
    assert stored.feedback.received_at == T0 + timedelta(minutes=3)


def test_a_comment_change_alone_is_an_update(store: DecisionStore) -> None:
    store.record(_record(), log_to_file=False)
    store.record_feedback(DelegationFeedback(task_id="task-1", outcome="accepted"), T0)
    receipt = store.record_feedback(DelegationFeedback(task_id="task-1", outcome="accepted", comment="great"), T0)
    assert receipt.result == "updated"
    assert len(_feedback_rows(store)) == 1


def test_feedback_by_workflow_id_and_by_task_id_are_the_same(store: DecisionStore) -> None:
    store.record(_record(), log_to_file=False)
    by_task = DelegationFeedback(task_id="task-1", outcome="reassigned", correct_assignee_id="legal-counsel")
    by_workflow = DelegationFeedback(
        workflow_id="delegation-task-1", outcome="reassigned", correct_assignee_id="legal-counsel"
    )
    assert by_task.decision_workflow_id == by_workflow.decision_workflow_id == "delegation-task-1"

    first = store.record_feedback(by_workflow, T0)
    second = store.record_feedback(by_task, T0 + timedelta(seconds=5))
    assert (first.result, second.result) == ("stored", "unchanged")
    assert (first.workflow_id, first.run_id, first.task_id) == (second.workflow_id, second.run_id, second.task_id)
    assert len(_feedback_rows(store)) == 1
    (stored,) = store.decisions_with_feedback()
    assert stored.feedback is not None
    # Stored under the decision's own task id, whichever way it was named.
    assert stored.feedback.feedback.task_id == "task-1"
    assert stored.feedback.feedback.workflow_id is None


def test_unknown_decision_names_the_task(store: DecisionStore) -> None:
    store.record(_record(), log_to_file=False)
    with pytest.raises(UnknownDecision, match="task-404"):
        store.record_feedback(DelegationFeedback(task_id="task-404", outcome="accepted"), T0)
    with pytest.raises(UnknownDecision, match="delegation-nope"):
        store.record_feedback(DelegationFeedback(workflow_id="delegation-nope", outcome="failed"), T0)
    assert _feedback_rows(store) == []


def test_unknown_decision_in_an_empty_store(store: DecisionStore) -> None:
    with pytest.raises(UnknownDecision, match="task-1"):
        store.record_feedback(DelegationFeedback(task_id="task-1", outcome="accepted"), T0)


def test_correct_assignee_outside_the_default_team_is_refused_naming_the_candidates(store: DecisionStore) -> None:
    store.record(_record(), log_to_file=False)
    feedback = DelegationFeedback(task_id="task-1", outcome="reassigned", correct_assignee_id="ceo")
    with pytest.raises(InvalidFeedback) as caught:
        store.record_feedback(feedback, T0)
    message = str(caught.value)
    assert "'ceo'" in message and "task-1" in message
    for candidate in DEFAULT_TEAM_IDS:
        assert candidate in message
    # A failed outcome may carry a correct assignee, but it must be a candidate as well.
    with pytest.raises(InvalidFeedback, match="ceo"):
        store.record_feedback(DelegationFeedback(task_id="task-1", outcome="failed", correct_assignee_id="ceo"), T0)
    assert _feedback_rows(store) == []


def test_correct_assignee_outside_a_custom_team_is_refused_naming_its_candidates(store: DecisionStore) -> None:
    team = [a.model_dump() for a in CUSTOM_TEAM]
    store.record(_record("task-custom", assignee="logistics", assignees=team), log_to_file=False)
    # In the default team, but not among this request's own candidates.
    outsider = DelegationFeedback(task_id="task-custom", outcome="reassigned", correct_assignee_id="finance-manager")
    with pytest.raises(InvalidFeedback) as caught:
        store.record_feedback(outsider, T0)
    message = str(caught.value)
    assert "'finance-manager'" in message and "task-custom" in message
    assert "['self', 'logistics', 'support-lead']" in message
    assert _feedback_rows(store) == []

    inside = DelegationFeedback(task_id="task-custom", outcome="reassigned", correct_assignee_id="support-lead")
    assert store.record_feedback(inside, T0).result == "stored"


# ---- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"task_id": "t-1", "outcome": "reassigned"},
            "correct_assignee_id is required when the outcome is 'reassigned'",
        ),
        (
            {"task_id": "t-1", "outcome": "accepted", "correct_assignee_id": "self"},
            "an accepted decision has no correct_assignee_id",
        ),
        (
            {"task_id": "t-1", "workflow_id": "delegation-t-1", "outcome": "failed"},
            "exactly one of task_id or workflow_id",
        ),
        ({"outcome": "failed"}, "exactly one of task_id or workflow_id"),
        ({"task_id": "t-1", "outcome": "ignored"}, "outcome"),
        ({"task_id": "t 1", "outcome": "accepted"}, "task_id"),
        ({"task_id": "t-1", "outcome": "reassigned", "correct_assignee_id": "not valid!"}, "correct_assignee_id"),
    ],
)
def test_feedback_model_refuses_inconsistent_feedback(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DelegationFeedback.model_validate(fields)
    assert message in str(caught.value)


def test_feedback_model_accepts_the_valid_shapes() -> None:
    reassigned = DelegationFeedback(task_id=" t-1 ", outcome="reassigned", correct_assignee_id="self")
    assert reassigned.task_id == "t-1" and reassigned.is_failure
    failed = DelegationFeedback(workflow_id="delegation-t-1", outcome="failed")
    assert failed.correct_assignee_id is None and failed.is_failure
    assert failed.decision_workflow_id == "delegation-t-1"
    accepted = DelegationFeedback(task_id="t-1", outcome="accepted")
    assert not accepted.is_failure and accepted.decision_workflow_id == "delegation-t-1"


# ---- windows and runs -------------------------------------------------------------------------


def test_decisions_with_feedback_filters_by_feedback_time(store: DecisionStore) -> None:
    # Decision times run opposite to feedback times, so a filter on the wrong column fails.
    for i, task in enumerate(("a", "b", "c", "d")):
        store.record(_record(f"task-{task}", decided_at=T0 - timedelta(hours=i)), log_to_file=False)
    arrivals = {"a": T0 + timedelta(hours=1), "b": T0 + timedelta(hours=2), "c": T0 + timedelta(hours=3)}
    for task, at in arrivals.items():
        store.record_feedback(DelegationFeedback(task_id=f"task-{task}", outcome="accepted"), at)

    def tasks(**window: datetime) -> list[str]:
        return [s.record.task_id for s in store.decisions_with_feedback(**window)]

    assert tasks() == ["task-a", "task-b", "task-c"]  # task-d has no feedback
    assert tasks(since=arrivals["a"]) == ["task-b", "task-c"]  # since is exclusive
    assert tasks(until=arrivals["b"]) == ["task-a", "task-b"]  # until is inclusive
    assert tasks(since=arrivals["a"], until=arrivals["b"]) == ["task-b"]
    assert tasks(since=arrivals["c"]) == []
    # The decision times are all at or before T0; they play no part in this window.
    assert tasks(until=T0) == []
    assert [s.record.task_id for s in store.decisions(until=T0 - timedelta(minutes=30))] == [
        "task-d",
        "task-c",
        "task-b",
    ]

    # An update moves the feedback into the later window; a repeat does not.
    later = T0 + timedelta(hours=5)
    store.record_feedback(DelegationFeedback(task_id="task-b", outcome="accepted"), later)  # unchanged
    assert tasks(since=arrivals["c"]) == []
    store.record_feedback(DelegationFeedback(task_id="task-a", outcome="failed"), later)  # updated
    assert tasks(since=arrivals["c"]) == ["task-a"]
    assert tasks() == ["task-b", "task-c", "task-a"]


def test_feedback_goes_to_the_latest_run_of_a_workflow(store: DecisionStore) -> None:
    # The later run is stored first: the latest run is chosen by decision time, not insertion order.
    store.record(
        _record(run_id="run-2", assignee="legal-counsel", decided_at=T0 + timedelta(days=1)), log_to_file=False
    )
    store.record(_record(run_id="run-1", assignee="finance-manager", decided_at=T0), log_to_file=False)

    receipt = store.record_feedback(DelegationFeedback(task_id="task-1", outcome="accepted"), T0 + timedelta(days=2))
    assert receipt.run_id == "run-2"
    assert receipt.decided_assignee_id == "legal-counsel"
    [counted] = store.decisions()  # one decision per task is counted: the latest run
    assert counted.record.run_id == "run-2"
    assert counted.feedback is not None and counted.feedback.feedback.outcome == "accepted"
    assert [(row[0], row[1]) for row in _feedback_rows(store)] == [("delegation-task-1", "run-2")]


def test_a_task_decided_twice_is_counted_once_in_the_report_and_the_guardrail(store: DecisionStore) -> None:
    """Defect 13: a client that re-runs a completed workflow id must not double a decision's weight."""
    store.record(_record(run_id="run-1", assignee="finance-manager", decided_at=T0), log_to_file=False)
    store.record(
        _record(run_id="run-2", assignee="legal-counsel", decided_at=T0 + timedelta(minutes=1)), log_to_file=False
    )
    assert [s.record.run_id for s in store.decisions()] == ["run-2"]
    assert [r.run_id for r in store.recent_decisions(10)] == ["run-2"]
    assert len(store.get("delegation-task-1")) == 2  # both runs stay stored: nothing is deleted


def test_recent_dspy_decisions_only_counts_dspy_assigned_ones_since_a_moment(store: DecisionStore) -> None:
    request = DelegationRequest(task_id="x", title="anything")
    for i in range(6):
        store.record(
            decision_record(
                request.model_copy(update={"task_id": f"x-{i}"}),
                workflow_id=f"delegation-x-{i}",
                assigned_variant="dspy" if i % 2 == 0 else "instructor",
                variant="dspy" if i % 2 == 0 else "instructor",
                decided_at=T0 + timedelta(minutes=i),
            ),
            log_to_file=False,
        )
    assert [r.workflow_id for r in store.recent_decisions(10, assigned_variant="dspy")] == [
        "delegation-x-4",
        "delegation-x-2",
        "delegation-x-0",
    ]
    assert [r.workflow_id for r in store.recent_decisions(2, assigned_variant="dspy")] == [
        "delegation-x-4",
        "delegation-x-2",
    ]
    assert [
        r.workflow_id for r in store.recent_decisions(10, assigned_variant="dspy", since=T0 + timedelta(minutes=2))
    ] == ["delegation-x-4"]
    assert len(store.recent_decisions(4)) == 4


def test_reassigned_to_the_assignee_it_already_had_is_refused(store: DecisionStore) -> None:
    store.record(_record(assignee="finance-manager"), log_to_file=False)
    feedback = DelegationFeedback(task_id="task-1", outcome="reassigned", correct_assignee_id="finance-manager")
    with pytest.raises(InvalidFeedback, match="already given to finance-manager: report it as accepted"):
        store.record_feedback(feedback, datetime.now(UTC))
    assert _feedback_rows(store) == []
