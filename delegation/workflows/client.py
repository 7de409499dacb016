"""Helpers for upstream services: connect with the right converter, start a decision, send feedback.

Imports only the wire contract (``delegation.core``) and temporalio: a caller that starts
decisions pulls in none of the deciders' libraries (DSPy, litellm, Instructor, openai) nor
the worker's (loguru, sqlite3). Workflows are started by name.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from delegation.core import names
from delegation.core.codec import PayloadKeyring, encrypted_data_converter
from delegation.core.converter import DATA_CONVERTER
from delegation.core.models import DecisionRecord, DelegationFeedback, DelegationRequest, FeedbackReceipt

# A completed decision is never made again for the same task (it would count twice in the
# report and the guardrail); a failed one may be. Clients in other languages set the same.
DECISION_ID_REUSE_POLICY = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY

# Connecting to an unroutable address can hang on TCP; a refused port fails at once.
CONNECT_TIMEOUT_S = 15.0


class TemporalUnreachable(ConnectionError):
    """No Temporal server answered at the address within the timeout."""


async def connect(
    address: str = "localhost:7233",
    namespace: str = "default",
    *,
    keyring: PayloadKeyring | None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> Client:
    """A Temporal client using the service's pydantic data converter; ``TemporalUnreachable`` after ``timeout_s``.

    With a ``keyring`` (the one every worker holds) payloads and failure messages are
    encrypted on the way to Temporal and decrypted on the way back; ``keyring=None`` sends
    them in clear, which the workers accept, but that client cannot read encrypted results.
    """
    converter = DATA_CONVERTER if keyring is None else encrypted_data_converter(keyring)
    try:
        return await asyncio.wait_for(Client.connect(address, namespace=namespace, data_converter=converter), timeout_s)
    except (RuntimeError, TimeoutError) as err:
        detail = str(err) or f"no answer within {timeout_s:.0f} s"
        raise TemporalUnreachable(f"cannot reach Temporal at {address} ({detail})") from None


async def start_delegation(
    client: Client,
    request: DelegationRequest,
    *,
    task_queue: str = names.DEFAULT_TASK_QUEUE,
    request_eager_start: bool = True,
    execution_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, DecisionRecord]:
    """Start ``DelegationWorkflow`` for a request (id ``delegation-<task_id>``) and return its handle.

    The request is validated before anything is sent. One decision per task: sending the
    same task again while its decision runs attaches to that run, and after it completed
    returns the handle of that completed decision (its result is the first record); only a
    task whose decision failed is decided again.
    """
    request = DelegationRequest.model_validate(request.model_dump())
    try:
        return await client.start_workflow(
            names.DELEGATION_WORKFLOW,
            request,
            id=request.workflow_id,
            task_queue=task_queue,
            result_type=DecisionRecord,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=DECISION_ID_REUSE_POLICY,
            request_eager_start=request_eager_start,
            execution_timeout=execution_timeout,
        )
    except WorkflowAlreadyStartedError:
        # The task was decided already: that decision stands.
        return client.get_workflow_handle(request.workflow_id, result_type=DecisionRecord)


async def decide(
    client: Client,
    request: DelegationRequest,
    *,
    task_queue: str = names.DEFAULT_TASK_QUEUE,
    request_eager_start: bool = True,
    execution_timeout: timedelta | None = None,
) -> DecisionRecord:
    """Start a decision (see ``start_delegation``) and wait for its record."""
    handle = await start_delegation(
        client,
        request,
        task_queue=task_queue,
        request_eager_start=request_eager_start,
        execution_timeout=execution_timeout,
    )
    return await handle.result()


def feedback_workflow_id(feedback: DelegationFeedback) -> str:
    """One workflow id per distinct piece of feedback on a decision: repeats attach to the same id."""
    digest = hashlib.sha256(feedback.model_dump_json().encode()).hexdigest()[:16]
    return f"{names.FEEDBACK_WORKFLOW_ID_PREFIX}{feedback.decision_workflow_id}-{digest}"


async def send_feedback(
    client: Client, feedback: DelegationFeedback, *, task_queue: str = names.DEFAULT_TASK_QUEUE
) -> FeedbackReceipt:
    """Record feedback on a decision through ``RecordFeedbackWorkflow`` and return the receipt.

    Raises ``WorkflowFailureError`` whose cause is an ``ApplicationError`` of type
    ``UnknownDecision`` or ``InvalidFeedback`` when the feedback does not fit.
    """
    feedback = DelegationFeedback.model_validate(feedback.model_dump())
    handle = await client.start_workflow(
        names.FEEDBACK_WORKFLOW,
        feedback,
        id=feedback_workflow_id(feedback),
        task_queue=task_queue,
        result_type=FeedbackReceipt,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        request_eager_start=True,
        # No execution timeout: feedback sent while every worker is down waits for one, however long.
    )
    receipt: FeedbackReceipt = await handle.result()
    return receipt
