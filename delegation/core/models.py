"""The wire contract: what upstream services send, what the service answers and records.

Standard library and pydantic only: workflow code imports this module.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from delegation.core.names import workflow_id_for

SELF_ID = "self"
MAX_TEXT_BYTES = 8 * 1024
MAX_REASONING_CHARS = 400
MAX_CANDIDATES = 32

Priority = Literal["low", "normal", "high", "urgent"]
Variant = Literal["instructor", "dspy"]
AssigneeId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]


class Assignee(BaseModel):
    """A candidate the task can be given to: a human or an agent, or the assistant itself (``self``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: AssigneeId
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    kind: Literal["human", "agent"]
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class DelegationRequest(BaseModel):
    """One task to decide on. ``assignees=None`` means the default team; ``routing_key=None`` means ``task_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$"),
    ]
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_BYTES)]
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TEXT_BYTES)] = ""
    priority: Priority = "normal"
    assignees: list[Assignee] | None = Field(default=None, max_length=MAX_CANDIDATES)
    routing_key: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None

    @field_validator("assignees")
    @classmethod
    def _candidates_are_usable(cls, value: list[Assignee] | None) -> list[Assignee] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("no candidates: send at least one assignee, or omit the field for the default team")
        counts = Counter(a.id for a in value)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate candidate ids: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _text_fits(self) -> DelegationRequest:
        size = len(self.title.encode("utf-8")) + len(self.description.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise ValueError(
                f"title and description hold {size} bytes of text together; the limit is {MAX_TEXT_BYTES} bytes"
            )
        return self

    @property
    def effective_routing_key(self) -> str:
        """The key that picks the rollout bucket."""
        return self.routing_key or self.task_id

    @property
    def workflow_id(self) -> str:
        """The Temporal workflow id for this task: one decision per task."""
        return workflow_id_for(self.task_id)


class DelegationDecision(BaseModel):
    """Who takes the task. Validated against the request's candidates via ``context={"candidate_ids": [...]}``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    assignee_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    should_delegate: bool = True
    reasoning: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_REASONING_CHARS)] = ""
    confidence: float = Field(ge=0.0, le=1.0)

    @field_validator("assignee_id")
    @classmethod
    def _assignee_in_candidates(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        candidate_ids = context.get("candidate_ids")
        if candidate_ids is not None and value not in candidate_ids:
            raise ValueError(f"assignee_id must be one of the candidate ids {sorted(candidate_ids)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _delegate_unless_self(cls, data: Any) -> Any:
        # should_delegate is derived, never trusted from the model's answer.
        if isinstance(data, dict) and "assignee_id" in data:
            assignee = str(data["assignee_id"]).strip()
            data = {**data, "should_delegate": assignee != SELF_ID}
        return data


class DecisionRecord(BaseModel):
    """Everything known about one decision: the A/B arm, who answered, how fast, and why it failed if it did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: str
    run_id: str
    task_id: str
    request: DelegationRequest
    decision: DelegationDecision | None
    variant: Variant = Field(description="The decider that produced the decision (or failed last).")
    assigned_variant: Variant = Field(description="The arm the feature flags chose for this request.")
    program_version: str
    model: str
    latency_ms: float = Field(ge=0)
    fallback_used: bool
    error: str | None
    bucket: int = Field(ge=0, le=9999)
    rollout_percentage: int = Field(
        ge=0, le=100, description="The DSPy share in force for this request (0 while DSPy is off)."
    )
    decided_at: AwareDatetime


def describe_validation_error(error: ValidationError, *, model_name: str | None = None) -> str:
    """A one-line summary naming each bad field, without echoing the input (it may hold personal data)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    title = model_name or error.title
    return f"invalid {title}: " + "; ".join(parts)


FeedbackOutcome = Literal["accepted", "reassigned", "failed"]
MAX_COMMENT_CHARS = 2000


class DelegationFeedback(BaseModel):
    """What really happened to a decision, reported by an upstream service or a person.

    Names the decision by ``task_id`` or by ``workflow_id`` (one of them). A ``reassigned``
    decision needs the ``correct_assignee_id``; a ``failed`` one may carry it. Reassigned
    and failed decisions are failed decisions: with a correct assignee they become training
    examples at the next re-optimization.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: (
        Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$")
        ]
        | None
    ) = None
    workflow_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)] | None = None
    outcome: FeedbackOutcome
    correct_assignee_id: AssigneeId | None = None
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_COMMENT_CHARS)] = ""

    @model_validator(mode="after")
    def _names_one_decision_and_fits_outcome(self) -> DelegationFeedback:
        if (self.task_id is None) == (self.workflow_id is None):
            raise ValueError("name the decision by exactly one of task_id or workflow_id")
        if self.outcome == "reassigned" and self.correct_assignee_id is None:
            raise ValueError("correct_assignee_id is required when the outcome is 'reassigned'")
        if self.outcome == "accepted" and self.correct_assignee_id is not None:
            raise ValueError("an accepted decision has no correct_assignee_id (the decided assignee was correct)")
        return self

    @property
    def decision_workflow_id(self) -> str:
        """The id of the DelegationWorkflow the feedback is about."""
        if self.workflow_id is not None:
            return self.workflow_id
        if self.task_id is None:  # validation requires one of the two; this keeps the type honest
            raise ValueError("the feedback names no decision")
        return workflow_id_for(self.task_id)

    @property
    def is_failure(self) -> bool:
        """Reassigned and failed decisions count as failed decisions."""
        return self.outcome != "accepted"


class FeedbackReceipt(BaseModel):
    """What storing a piece of feedback did: ``stored`` (new), ``unchanged`` (same as before) or ``updated``."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str
    task_id: str
    outcome: FeedbackOutcome
    correct_assignee_id: str | None
    result: Literal["stored", "unchanged", "updated"]
    decided_assignee_id: str | None = None
    variant: Variant | None = None
