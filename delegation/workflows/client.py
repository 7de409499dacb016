"""Helpers for upstream services: connect with the right converter and start a decision."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from delegation.core.models import DecisionRecord, DelegationFeedback, DelegationRequest, FeedbackReceipt
from delegation.core.reoptimization import FEEDBACK_WORKFLOW_NAME
from delegation.core.converter import DATA_CONVERTER
from delegation.workflows.delegation import TASK_QUEUE, WORKFLOW_NAME, DelegationWorkflow


async def connect(address: str = "localhost:7233", namespace: str = "default") -> Client:
    """A Temporal client using the service's pydantic data converter."""
    return await Client.connect(address, namespace=namespace, data_converter=DATA_CONVERTER)


async def start_delegation(
    client: Client,
    request: DelegationRequest,
    *,
    task_queue: str = TASK_QUEUE,
    request_eager_start: bool = True,
    execution_timeout: timedelta | None = None,
) -> WorkflowHandle[DelegationWorkflow, DecisionRecord]:
    """Start ``DelegationWorkflow`` for a request (id ``delegation-<task_id>``) and return its handle.

    The request is validated before anything is sent. Sending the same task again while
    its decision is running attaches to that run instead of deciding twice; once it has
    completed, a new request for the task starts a new decision.
    """
    request = DelegationRequest.model_validate(request.model_dump())
    return await client.start_workflow(
        WORKFLOW_NAME,
        request,
        id=request.workflow_id,
        task_queue=task_queue,
        result_type=DecisionRecord,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        request_eager_start=request_eager_start,
        execution_timeout=execution_timeout,
    )


async def decide(client: Client, request: DelegationRequest, **kwargs: object) -> DecisionRecord:
    """Start a decision and wait for its record."""
    handle = await start_delegation(client, request, **kwargs)  # type: ignore[arg-type]
    return await handle.result()


def feedback_workflow_id(feedback: DelegationFeedback) -> str:
    """One workflow id per distinct piece of feedback on a decision: repeats attach to the same id."""
    digest = hashlib.sha256(feedback.model_dump_json().encode()).hexdigest()[:16]
    return f"feedback-{feedback.decision_workflow_id}-{digest}"


async def send_feedback(
    client: Client, feedback: DelegationFeedback, *, task_queue: str = TASK_QUEUE
) -> FeedbackReceipt:
    """Record feedback on a decision through ``RecordFeedbackWorkflow`` and return the receipt.

    Raises ``WorkflowFailureError`` whose cause is an ``ApplicationError`` of type
    ``UnknownDecision`` or ``InvalidFeedback`` when the feedback does not fit.
    """
    feedback = DelegationFeedback.model_validate(feedback.model_dump())
    handle = await client.start_workflow(
        FEEDBACK_WORKFLOW_NAME,
        feedback,
        id=feedback_workflow_id(feedback),
        task_queue=task_queue,
        result_type=FeedbackReceipt,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        request_eager_start=True,
        execution_timeout=timedelta(minutes=5),
    )
    return await handle.result()
