"""The two deciders as Temporal activities: ``decide_with_instructor`` and ``decide_with_dspy``."""

from __future__ import annotations

import asyncio
import json

from loguru import logger
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from delegation.core.activity_io import DecideInput, DeciderResult
from delegation.deciders.protocol import Decider
from delegation.deciders.errors import InvalidDecisionError
from delegation.deciders.endpoint import LLMEndpoint

# HTTP statuses worth another attempt: the server may answer next time.
_RETRYABLE_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


def as_application_error(err: Exception, endpoint: LLMEndpoint, variant: str) -> ApplicationError:
    """Classify a decider failure for Temporal's retry policy; the message never carries the key or task text."""
    name = type(err).__name__
    if isinstance(err, InvalidDecisionError):
        # Same prompt at temperature 0 gives the same answer: retrying would only add latency.
        return ApplicationError(f"{variant}: {err}", type="InvalidDecision", non_retryable=True)
    from instructor.core.exceptions import InstructorError, InstructorRetryException

    if isinstance(err, InstructorRetryException):
        cause = err.__cause__
        parse_failure = isinstance(cause, ValidationError | json.JSONDecodeError | InstructorError)
        if isinstance(cause, Exception) and not parse_failure:
            # Instructor wraps transport errors too: classify what actually failed.
            return as_application_error(cause, endpoint, variant)
        return ApplicationError(
            f"{variant}: no valid answer after {err.n_attempts} attempts (the answer failed validation)",
            type="InvalidDecision",
            non_retryable=True,
        )
    status = getattr(err, "status_code", None)
    if status is None:
        status = getattr(getattr(err, "response", None), "status_code", None)
    message = endpoint.redact(f"{variant}: {name}: {err}")[:500]
    if isinstance(status, int) and status not in _RETRYABLE_STATUSES:
        return ApplicationError(message, type=f"LLMHTTP{status}", non_retryable=True)
    return ApplicationError(message, type=name, non_retryable=False)


class DeciderActivities:
    """Both deciders; dependencies are built by the worker."""

    def __init__(
        self,
        instructor: Decider,
        dspy: Decider,
        endpoint: LLMEndpoint,
        *,
        max_concurrent_calls: int,
        queue_timeout_s: float,
    ) -> None:
        self._instructor = instructor
        self._dspy = dspy
        self._endpoint = endpoint
        # Back-pressure: the endpoint serves only so many calls at once (one slot for the
        # embedded model); beyond that, calls wait here rather than time out inside the server.
        self._slots = asyncio.Semaphore(max_concurrent_calls)
        self._queue_timeout_s = queue_timeout_s

    async def _run(self, decider: Decider, variant: str, data: DecideInput) -> DeciderResult:
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ApplicationError(
                f"{variant}: no LLM slot free within {self._queue_timeout_s:.0f} s", type="LLMBusy"
            ) from None
        try:
            decision, latency_ms, version = await decider.decide(data.request)
        except Exception as err:
            failure = as_application_error(err, self._endpoint, variant)
            logger.warning(
                "{} decider failed for {} (attempt {}): {}",
                variant,
                data.workflow_id,
                activity.info().attempt,
                failure.message,
            )
            raise failure from None
        finally:
            self._slots.release()
        logger.info(
            "{} decided {} -> {} ({:.0f} ms, {})", variant, data.workflow_id, decision.assignee_id, latency_ms, version
        )
        return DeciderResult(decision=decision, program_version=version, model=decider.model, latency_ms=latency_ms)

    @activity.defn(name="decide_with_instructor")
    async def decide_with_instructor(self, data: DecideInput) -> DeciderResult:
        """The Instructor baseline."""
        return await self._run(self._instructor, "instructor", data)

    @activity.defn(name="decide_with_dspy")
    async def decide_with_dspy(self, data: DecideInput) -> DeciderResult:
        """The DSPy program currently promoted (or the unoptimized module)."""
        return await self._run(self._dspy, "dspy", data)
