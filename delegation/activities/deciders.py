"""The two deciders as Temporal activities: ``decide_with_instructor`` and ``decide_with_dspy``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from delegation.core import names
from delegation.core.activity_io import DecideInput, DeciderResult
from delegation.core.team import candidates_for
from delegation.deciders.endpoint import LLMEndpoint
from delegation.deciders.errors import MAX_ERROR_MESSAGE_CHARS, DeciderError
from delegation.deciders.protocol import Decider
from delegation.deciders.steering import detect_steering


def as_application_error(err: Exception, variant: str, redact: Callable[[str], str]) -> ApplicationError:
    """A decider failure for Temporal's retry policy, as the decider classified it.

    Anything that is not a ``DeciderError`` is a bug or an unexpected library error: retried,
    and typed by its class. The message never carries the key or task text.
    """
    if isinstance(err, DeciderError):
        return ApplicationError(f"{variant}: {err.message}", type=err.error_type, non_retryable=not err.retryable)
    message = redact(f"{variant}: {type(err).__name__}: {err}")[:MAX_ERROR_MESSAGE_CHARS]
    return ApplicationError(message, type=type(err).__name__, non_retryable=False)


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
            result = await decider.decide(data.request)
        except Exception as err:
            failure = as_application_error(err, variant, self._endpoint.redact)
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
        # Recorded, never obeyed: the decision above was made without regard to these hits.
        hits = detect_steering(
            f"{data.request.title}\n{data.request.description}", [c.id for c in candidates_for(data.request)]
        )
        if hits:
            result = result.model_copy(
                update={"decision": result.decision.model_copy(update={"steering_detected": tuple(hits)})}
            )
        logger.info(
            "{} decided {} -> {} ({:.0f} ms, {}{})",
            variant,
            data.workflow_id,
            result.decision.assignee_id,
            result.latency_ms,
            result.program_version,
            f", steering text detected: {', '.join(hits)}" if hits else "",
        )
        return result

    @activity.defn(name=names.DECIDE_WITH_INSTRUCTOR)
    async def decide_with_instructor(self, data: DecideInput) -> DeciderResult:
        """The Instructor baseline."""
        return await self._run(self._instructor, "instructor", data)

    @activity.defn(name=names.DECIDE_WITH_DSPY)
    async def decide_with_dspy(self, data: DecideInput) -> DeciderResult:
        """The DSPy program currently promoted (or the unoptimized module)."""
        return await self._run(self._dspy, "dspy", data)
