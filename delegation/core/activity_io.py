"""Inputs and outputs of the activities: one pydantic model in, one out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from delegation.core.models import DecisionRecord, DelegationDecision, DelegationRequest, Variant


class RoutingInput(BaseModel):
    """The key whose bucket decides the arm."""

    model_config = ConfigDict(frozen=True)

    routing_key: str


class RoutingChoice(BaseModel):
    """The flags read for one request and the arm they pick, recorded in history for replay."""

    model_config = ConfigDict(frozen=True)

    use_dspy_delegation: bool
    dspy_rollout_percentage: int = Field(ge=0, le=100)
    log_delegation_decisions: bool
    bucket: int = Field(ge=0, le=9999)
    variant: Variant
    flags_error: str | None = None
    guardrail: str | None = Field(default=None, description="Why the guardrail just rolled DSPy back, if it did.")
    decide_timeout_s: float = Field(gt=0, description="Start-to-close timeout for one decider attempt.")
    decider_activity: Literal["local", "remote"] = Field(
        default="remote", description="Run the decider as a local activity (fast path) or a regular one (queued)."
    )


class DecideInput(BaseModel):
    """A request for one decider."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    request: DelegationRequest


class DeciderResult(BaseModel):
    """A validated decision and where it came from."""

    model_config = ConfigDict(frozen=True)

    decision: DelegationDecision
    program_version: str
    model: str
    latency_ms: float = Field(ge=0)
    candidate_logprobs: dict[str, float] | None = Field(
        default=None,
        description="The model's log-probability of each candidate where the id starts, before any calibration "
        "(what the optimizer fits a prior correction on); None when the endpoint did not tell them apart.",
    )


class RecordResult(BaseModel):
    """Whether this attempt stored a new row and wrote a log line (False on a retried duplicate)."""

    model_config = ConfigDict(frozen=True)

    stored: bool
    logged: bool


class RecordInput(BaseModel):
    """A record to persist, and whether the training-data log is on for it."""

    model_config = ConfigDict(frozen=True)

    record: DecisionRecord
    log_to_file: bool
