"""The wire contract: delegation.core.models and the default team in delegation.core.team."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from delegation.core.models import (
    MAX_TEXT_BYTES,
    Assignee,
    DecisionRecord,
    DelegationDecision,
    DelegationRequest,
    describe_validation_error,
)
from delegation.core.team import candidates_for, default_team
from tests.support.factories import decision_record

CANDIDATES = {"candidate_ids": ["self", "backend-engineer", "legal-counsel"]}


def _assignee(assignee_id: str, kind: str = "human") -> dict[str, str]:
    return {"id": assignee_id, "name": f"Name of {assignee_id}", "kind": kind, "description": "Does things."}


def _request(**overrides: Any) -> dict[str, Any]:
    return {"task_id": "task-1", "title": "Renew the office lease", **overrides}


def _decision_record(
    *,
    workflow_id: str = "delegation-task-1",
    run_id: str = "run-1",
    decision: DelegationDecision | None = None,
    error: str | None = None,
) -> DecisionRecord:
    request = DelegationRequest(task_id="task-1", title="Renew the office lease", description="Before May.")
    return decision_record(request, workflow_id=workflow_id, run_id=run_id, decision=decision, error=error)


def _described(data: dict[str, Any], model: type = DelegationRequest, **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data, **kwargs)
    return describe_validation_error(info.value)


# --- DelegationRequest ------------------------------------------------------------------------


def test_minimal_request_gets_defaults() -> None:
    request = DelegationRequest.model_validate({"task_id": "task-7", "title": "  Book a room  "})
    assert request.title == "Book a room"
    assert request.description == ""
    assert request.priority == "normal"
    assert request.assignees is None
    assert request.routing_key is None
    assert request.effective_routing_key == "task-7"
    assert request.workflow_id == "delegation-task-7"


def test_routing_key_overrides_task_id_for_bucketing() -> None:
    request = DelegationRequest.model_validate(_request(routing_key="user-9"))
    assert request.effective_routing_key == "user-9"
    assert request.workflow_id == "delegation-task-1"


@pytest.mark.parametrize("title", ["", "   ", "\n\t"])
def test_empty_title_is_rejected(title: str) -> None:
    text = _described(_request(title=title))
    assert text.startswith("invalid DelegationRequest: ")
    assert "title" in text


def test_text_limit_counts_bytes_not_characters() -> None:
    # 3000 + 1200 three-byte characters: 4200 characters (under the per-field limit) but 12600 bytes.
    title = "€" * 3000
    description = "€" * 1200
    assert len(title) + len(description) < MAX_TEXT_BYTES
    assert len((title + description).encode()) > MAX_TEXT_BYTES
    text = _described(_request(title=title, description=description))
    assert "title and description" in text
    assert "12600 bytes" in text
    assert "€" not in text

    # The same number of ASCII characters fits.
    DelegationRequest.model_validate(_request(title="e" * 3000, description="e" * 1200))


def test_text_exactly_at_the_limit_is_accepted() -> None:
    DelegationRequest.model_validate(_request(title="t" * 4096, description="d" * (MAX_TEXT_BYTES - 4096)))
    text = _described(_request(title="t" * 4096, description="d" * (MAX_TEXT_BYTES - 4096 + 1)))
    assert "title and description" in text


def test_empty_assignees_list_is_rejected() -> None:
    text = _described(_request(assignees=[]))
    assert "assignees" in text
    assert "no candidates" in text


def test_duplicate_candidate_ids_are_rejected() -> None:
    text = _described(_request(assignees=[_assignee("alice"), _assignee("bob"), _assignee("alice")]))
    assert "assignees" in text
    assert "duplicate candidate ids: alice" in text


def test_unknown_priority_is_rejected() -> None:
    text = _described(_request(priority="critical"))
    assert "priority" in text
    assert "critical" not in text


def test_extra_fields_are_rejected() -> None:
    assert "deadline" in _described(_request(deadline="tomorrow"))


def test_description_does_not_echo_the_input() -> None:
    marker = "PERSONAL-DATA-MARKER-7f3a9c"
    description = (marker + " ") * 400  # > 8192 characters
    text = _described(_request(description=description))
    assert "description" in text
    assert marker not in text
    assert "PERSONAL" not in text


def test_bad_nested_assignee_names_its_location() -> None:
    bad = {**_assignee("carol"), "kind": "robot"}
    text = _described(_request(assignees=[_assignee("alice"), bad]))
    assert "assignees.1.kind" in text
    assert "robot" not in text


# --- DelegationDecision -----------------------------------------------------------------------


def test_decision_assignee_outside_candidates_is_rejected() -> None:
    text = _described(
        {"assignee_id": "finance-manager", "confidence": 0.9, "reasoning": "money"},
        DelegationDecision,
        context=CANDIDATES,
    )
    assert "assignee_id" in text
    assert "candidate ids" in text


def test_decision_assignee_inside_candidates_is_accepted() -> None:
    decision = DelegationDecision.model_validate(
        {"assignee_id": " legal-counsel ", "confidence": 0.8, "reasoning": "contract"}, context=CANDIDATES
    )
    assert decision.assignee_id == "legal-counsel"
    assert decision.should_delegate is True


@pytest.mark.parametrize(
    ("assignee_id", "claimed", "expected"),
    [("self", True, False), ("self ", True, False), ("backend-engineer", False, True), ("legal-counsel", False, True)],
)
def test_should_delegate_is_derived_not_trusted(assignee_id: str, claimed: bool, expected: bool) -> None:
    decision = DelegationDecision.model_validate(
        {"assignee_id": assignee_id, "should_delegate": claimed, "confidence": 0.5}, context=CANDIDATES
    )
    assert decision.should_delegate is expected


@pytest.mark.parametrize("confidence", [-0.01, 1.01, 5])
def test_confidence_outside_unit_interval_is_rejected(confidence: float) -> None:
    text = _described({"assignee_id": "self", "confidence": confidence}, DelegationDecision, context=CANDIDATES)
    assert "confidence" in text


@pytest.mark.parametrize("confidence", [0.0, 1.0])
def test_confidence_bounds_are_inclusive(confidence: float) -> None:
    assert DelegationDecision.model_validate({"assignee_id": "self", "confidence": confidence}).confidence == confidence


def test_reasoning_over_400_chars_is_rejected() -> None:
    DelegationDecision.model_validate({"assignee_id": "self", "confidence": 0.5, "reasoning": "r" * 400})
    text = _described({"assignee_id": "self", "confidence": 0.5, "reasoning": "r" * 401}, DelegationDecision)
    assert "reasoning" in text


# --- default team -----------------------------------------------------------------------------


def test_default_team_has_the_eight_candidates_with_their_kinds() -> None:
    team = default_team()
    assert [a.id for a in team] == [
        "self",
        "backend-engineer",
        "product-designer",
        "finance-manager",
        "legal-counsel",
        "people-ops",
        "research-agent",
        "it-ops-agent",
    ]
    kinds = {a.id: a.kind for a in team}
    assert {i for i, k in kinds.items() if k == "agent"} == {"self", "research-agent", "it-ops-agent"}
    assert {i for i, k in kinds.items() if k == "human"} == {
        "backend-engineer",
        "product-designer",
        "finance-manager",
        "legal-counsel",
        "people-ops",
    }
    assert all(isinstance(a, Assignee) and a.description for a in team)


def test_candidates_for_uses_request_assignees_when_given() -> None:
    request = DelegationRequest.model_validate(_request(assignees=[_assignee("alice"), _assignee("bot", "agent")]))
    candidates = candidates_for(request)
    assert [a.id for a in candidates] == ["alice", "bot"]
    assert candidates == tuple(request.assignees or ())


def test_candidates_for_falls_back_to_default_team() -> None:
    assert candidates_for(DelegationRequest.model_validate(_request())) == default_team()


# --- DecisionRecord ---------------------------------------------------------------------------


def test_decision_record_round_trips_through_json() -> None:
    decision = DelegationDecision.model_validate(
        {"assignee_id": "legal-counsel", "confidence": 0.75, "reasoning": "a contract"}, context=CANDIDATES
    )
    record = _decision_record(decision=decision)
    again = DecisionRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.decided_at.tzinfo is not None
    assert again.decision is not None and again.decision.should_delegate is True


def test_failed_decision_record_round_trips_through_json() -> None:
    record = _decision_record(decision=None, error="deciders failed")
    assert DecisionRecord.model_validate_json(record.model_dump_json()) == record


@pytest.mark.parametrize(("field", "value"), [("bucket", 10_000), ("rollout_percentage", 101), ("latency_ms", -1)])
def test_decision_record_rejects_out_of_range_numbers(field: str, value: int) -> None:
    data = _decision_record().model_dump()
    data[field] = value
    assert field in _described(data, DecisionRecord)
