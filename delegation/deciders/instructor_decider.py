"""The baseline decider: Instructor, structured output into a pydantic model, JSON-schema mode."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator

from delegation.core.models import MAX_REASONING_CHARS, Assignee, DelegationDecision, DelegationRequest, Verdict
from delegation.core.team import candidates_for
from delegation.deciders.policy import (
    POLICY,
    REASONING_HINT,
    REASONING_MAX_CHARS,
    confidence_as_fraction,
    format_candidates,
    format_task,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from delegation.deciders.endpoint import LLMEndpoint

PROGRAM_VERSION = "instructor-v1"
# Instructor re-asks only when the answer fails validation; transport errors go to Temporal.
MAX_REASKS = 2


class RoutingAnswer(BaseModel):
    """The structured answer the model fills in."""

    assignee_id: str = Field(description="The id of exactly one listed candidate.")
    confidence: float = Field(description="How sure you are, from 0 to 1.")
    reasoning: str = Field(
        default="",
        description=REASONING_HINT,
        json_schema_extra={"maxLength": REASONING_MAX_CHARS},
    )

    @field_validator("reasoning", mode="before")
    @classmethod
    def _clip_reasoning(cls, value: Any) -> Any:
        # A long reason is not worth a re-ask: keep what fits.
        return value[:REASONING_MAX_CHARS] if isinstance(value, str) else value

    @field_validator("confidence", mode="before")
    @classmethod
    def _percent_to_fraction(cls, value: Any) -> Any:
        return confidence_as_fraction(value)

    @field_validator("confidence")
    @classmethod
    def _confidence_in_range(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("confidence must be between 0 and 1")
        return value

    @field_validator("assignee_id")
    @classmethod
    def _assignee_is_a_candidate(cls, value: str, info: Any) -> str:
        ids = (info.context or {}).get("candidate_ids")
        if ids is not None and value.strip() not in ids:
            raise ValueError(f"assignee_id must be one of {sorted(ids)}")
        return value.strip()


RoutingAnswer.__doc__ = POLICY


@lru_cache(maxsize=256)
def response_model_for(candidate_ids: tuple[str, ...]) -> type[RoutingAnswer]:
    """A response model whose schema lists the candidates as an enum, so the server's grammar steers the answer.

    The enum is a hint only: the validator above, driven by ``context``, is what enforces it.
    """
    return create_model(  # type: ignore[call-overload,no-any-return]
        "RoutingAnswer",
        __base__=RoutingAnswer,
        __doc__=POLICY,
        assignee_id=(Literal[candidate_ids], Field(description="The id of exactly one listed candidate.")),
    )


SYSTEM_PROMPT = (
    f"{POLICY}\nReply with JSON: assignee_id, confidence (0 to 1), "
    "reasoning (at most ten words naming the rule, e.g. \"Rule 2: invoice payment.\")."
)


def build_messages(request: DelegationRequest, candidates: Sequence[Assignee]) -> list[dict[str, str]]:
    """The fixed part first (system prompt, then the candidates), the task last.

    The server's prompt cache reuses the longest common prefix, so everything that is the
    same on every call comes before the task text.
    """
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"Candidates:\n{format_candidates(candidates)}\n\n"
            f"{format_task(request.title, request.description, request.priority)}",
        },
    ]


class InstructorDecider:
    """Decides with ``instructor.from_openai(AsyncOpenAI(max_retries=0))`` in JSON-schema mode."""

    def __init__(self, client: AsyncOpenAI, endpoint: LLMEndpoint) -> None:
        import instructor

        self._endpoint = endpoint
        self._client = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
        self.program_version = PROGRAM_VERSION

    @property
    def model(self) -> str:
        return self._endpoint.model

    async def decide(self, request: DelegationRequest) -> Verdict:
        """Return a decision validated against the request's candidates, and the latency in ms."""
        candidates = candidates_for(request)
        ids = tuple(c.id for c in candidates)
        started = time.perf_counter()
        answer = await self._client.chat.completions.create(
            model=self._endpoint.model,
            response_model=response_model_for(ids),
            messages=build_messages(request, candidates),  # type: ignore[arg-type]
            max_retries=MAX_REASKS,
            context={"candidate_ids": set(ids)},
            temperature=0.0,
            max_tokens=self._endpoint.max_tokens,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        decision = DelegationDecision.model_validate(
            {
                "assignee_id": answer.assignee_id,
                "confidence": answer.confidence,
                "reasoning": answer.reasoning[:MAX_REASONING_CHARS],
            },
            context={"candidate_ids": set(ids)},
        )
        return Verdict(decision, latency_ms, self.program_version)
