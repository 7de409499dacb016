"""Helpers for upstream services: connect with the right converter and start a decision."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from core.models import DecisionRecord, DelegationRequest
from workflows.converter import DATA_CONVERTER
from workflows.delegation import TASK_QUEUE, WORKFLOW_NAME, DelegationWorkflow


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
