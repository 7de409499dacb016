"""The baseline decider: Instructor, structured output into ``DelegationAnswer``, JSON-schema mode."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from delegation.core.activity_io import DeciderResult
from delegation.core.models import Assignee, DelegationRequest
from delegation.core.team import candidates_for
from delegation.deciders.errors import DeciderError, InvalidDecisionError, llm_call_error
from delegation.deciders.policy import POLICY, answer_model_for, format_candidates, format_task

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from delegation.deciders.endpoint import LLMEndpoint

PROGRAM_VERSION = "instructor-v1"
# Instructor re-asks only when the answer fails validation; transport errors go to Temporal.
MAX_REASKS = 2

SYSTEM_PROMPT = (
    f"{POLICY}\nReply with JSON: assignee_id, confidence (0 to 1), "
    'reasoning (at most ten words naming the rule, e.g. "Rule 2: invoice payment.").'
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

    async def decide(self, request: DelegationRequest) -> DeciderResult:
        """A decision validated against the request's candidates; ``DeciderError`` when there is none."""
        candidates = candidates_for(request)
        ids = tuple(c.id for c in candidates)
        started = time.perf_counter()
        try:
            answer = await self._client.chat.completions.create(
                model=self._endpoint.model,
                response_model=answer_model_for(ids),
                messages=build_messages(request, candidates),  # type: ignore[arg-type]  # plain dicts are valid messages
                max_retries=MAX_REASKS,
                context={"candidate_ids": set(ids)},
                temperature=0.0,
                max_tokens=self._endpoint.max_tokens,
            )
        except Exception as err:
            raise self._classify(err) from None
        latency_ms = (time.perf_counter() - started) * 1000
        return DeciderResult(
            decision=answer.to_decision(ids),
            program_version=self.program_version,
            model=self.model,
            latency_ms=latency_ms,
        )

    def _classify(self, err: Exception) -> DeciderError:
        """Instructor's failures: a re-ask budget spent on invalid answers, or what the transport raised."""
        from instructor.core.exceptions import InstructorError, InstructorRetryException

        if isinstance(err, InstructorRetryException):
            cause = err.__cause__
            parse_failure = isinstance(cause, ValidationError | json.JSONDecodeError | InstructorError)
            if isinstance(cause, Exception) and not parse_failure:
                # Instructor wraps transport errors too: classify what actually failed.
                return llm_call_error(cause, self._endpoint.redact)
            return InvalidDecisionError(
                f"no valid answer after {err.n_attempts} attempts (the answer failed validation)"
            )
        return llm_call_error(err, self._endpoint.redact)
