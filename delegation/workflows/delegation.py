"""``DelegationWorkflow``: flags → chosen decider (→ Instructor fallback) → record.

Orchestration only: flags, LLM calls and storage all happen in activities, so a replay
of the history reproduces every choice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from delegation.activities.deciders import DeciderActivities
    from delegation.activities.flags import FlagActivities
    from delegation.activities.recording import RecordActivities
    from delegation.core import names
    from delegation.core.activity_io import DecideInput, DeciderResult, RecordInput, RoutingChoice, RoutingInput
    from delegation.core.models import DecisionRecord, DelegationRequest, Variant
    from delegation.core.search_attributes import (
        DELEGATION_ASSIGNEE,
        DELEGATION_CONFIDENCE,
        DELEGATION_FALLBACK,
        DELEGATION_PROGRAM_VERSION,
        DELEGATION_STEERING_DETECTED,
        DELEGATION_VARIANT,
    )

FLAGS_TIMEOUT = timedelta(seconds=10)
RECORD_TIMEOUT = timedelta(seconds=30)
SHORT_STEP_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
# A decision must never be lost to a storage hiccup: keep retrying until the store answers.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["InvalidInput"],
)
DECIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=["InvalidDecision", "InvalidInput"],
)


# Local activity failures arrive as the activity's own error (or a timeout), not wrapped.
DECIDER_FAILURES = (ActivityError, ApplicationError, TimeoutError)


def _failure_message(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError):
        # The type is how the failure was classified (and retried): the record says it.
        return f"{cause.message} [{cause.type}]" if cause.type else cause.message
    return str(cause or err)


@workflow.defn(name=names.DELEGATION_WORKFLOW)
class DelegationWorkflow:
    """Decides who handles one task and records the decision."""

    def __init__(self) -> None:
        self._record: DecisionRecord | None = None

    @workflow.query(name=names.DECISION_QUERY)
    def decision(self) -> DecisionRecord | None:
        """The decision record, once there is one."""
        return self._record

    async def _decide(self, variant: Variant, data: DecideInput, choice: RoutingChoice) -> DeciderResult:
        method = DeciderActivities.decide_with_dspy if variant == "dspy" else DeciderActivities.decide_with_instructor
        timeout = timedelta(seconds=choice.decide_timeout_s)
        if choice.decider_activity == "local":
            # Fast path for endpoints that answer in about a second: no extra server round trips.
            return await workflow.execute_local_activity_method(
                method, data, start_to_close_timeout=timeout, retry_policy=DECIDER_RETRY
            )
        # Slow or capacity-bound endpoints: calls queue in the task queue, visible in the UI.
        return await workflow.execute_activity_method(
            method, data, start_to_close_timeout=timeout, retry_policy=DECIDER_RETRY
        )

    @workflow.run
    async def run(self, request: DelegationRequest) -> DecisionRecord:
        info = workflow.info()
        choice: RoutingChoice = await workflow.execute_local_activity_method(
            FlagActivities.read_feature_flags,
            RoutingInput(routing_key=request.effective_routing_key),
            start_to_close_timeout=FLAGS_TIMEOUT,
            retry_policy=SHORT_STEP_RETRY,
        )
        if choice.flags_error:
            workflow.logger.warning("flags rejected, Instructor decides (the safe default): %s", choice.flags_error)
        if choice.guardrail:
            workflow.logger.error("guardrail rolled DSPy back to 0 %%: %s", choice.guardrail)

        data = DecideInput(workflow_id=info.workflow_id, request=request)
        variant: Variant = choice.variant
        errors: list[str] = []
        result: DeciderResult | None = None
        fallback_used = False
        try:
            result = await self._decide(variant, data, choice)
        except DECIDER_FAILURES as err:
            errors.append(_failure_message(err))
            if variant == "dspy":
                workflow.logger.warning("DSPy failed, falling back to Instructor: %s", errors[-1])
                fallback_used = True
                variant = "instructor"
                try:
                    result = await self._decide(variant, data, choice)
                except DECIDER_FAILURES as fallback_err:
                    errors.append(_failure_message(fallback_err))

        record = DecisionRecord(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            task_id=request.task_id,
            request=request,
            decision=result.decision if result else None,
            variant=variant,
            assigned_variant=choice.variant,
            program_version=result.program_version if result else "unavailable",
            model=result.model if result else "unavailable",
            latency_ms=result.latency_ms if result else 0.0,
            fallback_used=fallback_used,
            error="; ".join(errors) or None,
            flags_error=choice.flags_error,
            bucket=choice.bucket,
            # The DSPy share actually in force for this request (0 while DSPy is off), for the SRM check.
            rollout_percentage=choice.dspy_rollout_percentage if choice.use_dspy_delegation else 0,
            decided_at=workflow.now(),
        )
        self._record = record
        updates: list[SearchAttributeUpdate[Any]] = [
            DELEGATION_VARIANT.value_set(variant),
            DELEGATION_FALLBACK.value_set(fallback_used),
        ]
        if result is not None:
            updates += [
                DELEGATION_ASSIGNEE.value_set(result.decision.assignee_id),
                DELEGATION_CONFIDENCE.value_set(result.decision.confidence),
                DELEGATION_PROGRAM_VERSION.value_set(result.program_version),
            ]
            if workflow.patched(names.STEERING_SEARCH_ATTRIBUTE_PATCH):
                updates.append(DELEGATION_STEERING_DETECTED.value_set(bool(result.decision.steering_detected)))
        workflow.upsert_search_attributes(updates)

        # Recorded even when both deciders failed: failures are training data too.
        await workflow.execute_local_activity_method(
            RecordActivities.record_decision,
            RecordInput(record=record, log_to_file=choice.log_delegation_decisions),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )
        if result is None:
            raise ApplicationError(
                f"no decider could decide task {request.task_id}: " + "; ".join(errors),
                type="DecisionFailed",
                non_retryable=True,
            )
        return record
