"""delegation.core.converter.DATA_CONVERTER: pydantic JSON, with invalid input as a non-retryable ApplicationError."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from delegation.core.converter import DATA_CONVERTER, INVALID_INPUT_ERROR
from delegation.core.models import DecisionRecord, DelegationDecision, DelegationRequest
from tests.support.factories import decision_record

CONVERTER = DATA_CONVERTER.payload_converter


def _decision_record(request: DelegationRequest) -> DecisionRecord:
    return decision_record(
        request,
        decision=DelegationDecision(assignee_id="legal-counsel", confidence=0.7, reasoning="contract"),
        variant="instructor",
        latency_ms=3.0,
        fallback_used=True,
        error="dspy failed",
        bucket=17,
        rollout_percentage=25,
    )


def _request() -> DelegationRequest:
    return DelegationRequest(
        task_id="task-1",
        title="Review the NDA",
        description="From ACME — due Friday",
        priority="high",
        assignees=[{"id": "legal-counsel", "name": "Legal", "kind": "human", "description": "Contracts."}],
        routing_key="user-3",
    )


def test_request_round_trips() -> None:
    request = _request()
    payloads = CONVERTER.to_payloads([request])
    assert payloads[0].metadata["encoding"] == b"json/plain"
    (decoded,) = CONVERTER.from_payloads(payloads, [DelegationRequest])
    assert isinstance(decoded, DelegationRequest)
    assert decoded == request


def test_decision_record_round_trips() -> None:
    record = _decision_record(_request())
    (decoded,) = CONVERTER.from_payloads(CONVERTER.to_payloads([record]), [DecisionRecord])
    assert isinstance(decoded, DecisionRecord)
    assert decoded == record


def test_empty_title_is_a_non_retryable_invalid_input_error() -> None:
    marker = "SECRET-DESCRIPTION-MARKER-91b2"
    payloads = CONVERTER.to_payloads([{"task_id": "task-1", "title": "", "description": marker}])
    with pytest.raises(ApplicationError) as info:
        CONVERTER.from_payloads(payloads, [DelegationRequest])
    error = info.value
    assert error.non_retryable is True
    assert error.type == INVALID_INPUT_ERROR == "InvalidInput"
    assert "title" in error.message
    assert "DelegationRequest" in error.message
    assert marker not in error.message
    assert marker not in str(error)
    assert error.__cause__ is None  # the pydantic error (which holds the input) is not chained


def test_over_long_title_is_named_without_echoing_it() -> None:
    marker = "PRIVATE-TITLE-MARKER-3c5d "
    payloads = CONVERTER.to_payloads([{"task_id": "task-1", "title": marker * 400}])
    with pytest.raises(ApplicationError) as info:
        CONVERTER.from_payloads(payloads, [DelegationRequest])
    assert info.value.non_retryable is True
    assert info.value.type == "InvalidInput"
    assert "title" in info.value.message
    assert "PRIVATE-TITLE-MARKER" not in info.value.message


def test_plain_values_still_convert() -> None:
    values = [None, "text", 3, {"a": [1, 2]}]
    payloads = CONVERTER.to_payloads(values)
    assert CONVERTER.from_payloads(payloads, [type(None), str, int, dict]) == values
