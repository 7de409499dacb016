"""A worker killed with SIGKILL mid-decision, and every worker down for longer than any timeout.

The promise under test: a decision survives a crashed worker. After a restart the workflow
completes with exactly one stored row and one assignment, and the training-data log holds
the decision once (after the documented dedupe by workflow and run id; here raw as well).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from delegation.core.models import DelegationFeedback
from delegation.workflows.client import feedback_workflow_id, send_feedback
from tests.faults.conftest import FaultStack
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer

RESULT_TIMEOUT_S = 90


class CrashOnFirstCall:
    """The scripted LLM's behaviour: the first completion request meets a crash, later ones an answer."""

    def __init__(self, *, after_answer: bool) -> None:
        self.after_answer = after_answer
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.stack: FaultStack | None = None
        self._lock = threading.Lock()

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        if first and self.after_answer:
            assert self.stack is not None
            self.stack.worker.freeze()  # the answer goes out, the worker never reads it
        elif first:
            self.arrived.set()
            self.release.wait(60)  # the worker is killed while it waits for this answer
        return routing_answer("legal-counsel", 0.9)

    def sent(self, body: dict[str, Any]) -> None:
        if self.calls == 1 and self.after_answer:
            assert self.stack is not None
            self.stack.worker.kill()
            self.arrived.set()


@pytest.mark.parametrize(
    ("decider_activity", "after_answer"),
    [("remote", False), ("remote", True), ("local", False), ("local", True)],
    ids=["remote-during-call", "remote-after-answer", "local-during-call", "local-after-answer"],
)
async def test_a_worker_killed_mid_decision_decides_once_after_restart(
    fault_stack_factory: Any, decider_activity: str, after_answer: bool
) -> None:
    script = CrashOnFirstCall(after_answer=after_answer)
    with ScriptedOpenAI(script.respond, on_sent=script.sent) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url, DECIDER_ACTIVITY=decider_activity)
        script.stack = stack
        stack.worker.start()
        request = stack.request("crash")
        handle = await stack.start(request)
        assert await asyncio.to_thread(script.arrived.wait, 30), "the decider never called the LLM"
        stack.worker.kill()  # a no-op when the answer's hook already killed it
        script.release.set()
        killed_at = time.monotonic()
        stack.worker.start()
        record = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
        recovered = time.monotonic() - killed_at

    assert record.decision is not None and record.decision.assignee_id == "legal-counsel"
    assert record.variant == "instructor" and not record.fallback_used and record.error is None
    assert script.calls == 2, "the killed attempt and exactly one retry reached the LLM"
    rows = stack.rows(request.workflow_id)
    assert len(rows) == 1, "one stored row per decision"
    assert rows[0].decision == record.decision, "the stored assignment is the one returned"
    assert stack.logged(request.workflow_id) == (1, 1), "one training-data line"
    description = await handle.describe()
    assert description.status is not None and description.status.name == "COMPLETED"
    print(
        f"{decider_activity} decider, killed {'after the answer' if after_answer else 'mid-call'}: "
        f"completed {recovered:.1f} s after the kill, 1 row, 1 log line"
    )


async def test_every_worker_down_longer_than_any_timeout_loses_nothing(fault_stack_factory: Any) -> None:
    """Decisions and feedback sent while no worker runs wait for one; no timeout fails them.

    Down for longer than the workflow-task timeout (10 s) and every start-to-close timeout
    that could start without a worker (none can: they start when a worker picks the task up).
    The histories must show no timeout at all, and no execution or run timeout is set.
    """
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url, DECIDER_ACTIVITY="remote")
        first = stack.request("before-outage")
        with stack.worker:
            decided = await (await stack.start(first)).result()
        assert decided.decision is not None

        stack.worker.start()
        stack.worker.kill()  # down hard, not drained
        during = [stack.request(f"during-{i}") for i in range(3)]
        handles = [await stack.start(r) for r in during]
        feedback = DelegationFeedback(task_id=first.task_id, outcome="reassigned", correct_assignee_id="self")
        feedback_task = asyncio.create_task(send_feedback(stack.client, feedback, task_queue=stack.task_queue))
        down_s = 14.0
        await asyncio.sleep(down_s)  # the outage itself, not a wait for a result
        assert not feedback_task.done(), "feedback completed with no worker running"
        for handle in handles:
            description = await handle.describe()
            assert description.status is not None and description.status.name == "RUNNING"

        stack.worker.start()
        records = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), RESULT_TIMEOUT_S)
        receipt = await asyncio.wait_for(feedback_task, RESULT_TIMEOUT_S)

    assert all(r.decision is not None and r.decision.assignee_id == "legal-counsel" for r in records)
    assert receipt.result == "stored" and receipt.correct_assignee_id == "self"
    for request in during:
        assert len(stack.rows(request.workflow_id)) == 1
    stored = stack.store().decisions()
    assert {s.record.task_id for s in stored} == {first.task_id, *(r.task_id for r in during)}
    [with_feedback] = [s for s in stored if s.feedback is not None]
    assert with_feedback.record.task_id == first.task_id

    timeout_events = {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    }
    feedback_handle = stack.client.get_workflow_handle(feedback_workflow_id(feedback))
    for handle in [*handles, feedback_handle]:
        history = await handle.fetch_history()
        assert not [e for e in history.events if e.event_type in timeout_events], handle.id
        started = history.events[0].workflow_execution_started_event_attributes
        assert not started.HasField("workflow_execution_timeout"), handle.id
        assert not started.HasField("workflow_run_timeout"), handle.id
    print(
        f"all workers down {down_s:.0f} s: {len(records)} decisions and 1 feedback completed after the restart, "
        "0 lost, 0 timeouts in their histories"
    )
