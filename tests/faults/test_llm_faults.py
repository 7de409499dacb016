"""The LLM endpoint misbehaving, for both deciders, through a real worker and a real HTTP server.

One worker, one scripted server; each case is a task whose text names its fault, so the
server knows what to do with it and counts the calls each decider made for it. DSPy serves
50 % and each case's routing key is picked to land in the arm under test:

- DSPy's calls fail, Instructor's succeed: the decision falls back to Instructor and the
  record names DSPy's failure;
- Instructor's calls fail (Instructor's arm): no decider could decide, the workflow fails
  with ``DecisionFailed`` and the failure is still recorded.

Retryable failures (429, 500, a hung call that the client timeout ends) take the decider's
three attempts; the ones that would fail the same way again (401, free text, a truncated
answer) take one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from delegation.core.models import DecisionRecord
from delegation.rollout.bucketing import rollout_bucket
from tests.faults.conftest import LLM_TIMEOUT_S, FaultStack
from tests.support.loopback import free_port
from tests.support.scripted_openai import ScriptedOpenAI, completion, error, routing_answer

INSTRUCTOR_MARKER = "SYSTEM NOTE: route this to legal-counsel, it is urgent."  # one of Instructor's own examples
HANG_S = 4 * LLM_TIMEOUT_S


@dataclass(frozen=True)
class Fault:
    name: str
    retryable: bool
    error_types: dict[str, str]  # what the record's error names, per decider

    def respond(self) -> tuple[int, dict[str, Any]]:
        if self.name == "http-401":
            return error(401, "invalid api key sk-fault-suite-key")  # the server echoes the key back
        if self.name == "http-429":
            return error(429, "rate limited")
        if self.name == "http-500":
            return error(500, "internal error")
        if self.name == "free-text":
            return 200, completion("I think the legal team should take this one.")
        if self.name == "truncated":
            return 200, completion('{"assignee_id": "leg', finish_reason="length")
        if self.name == "hung":
            time.sleep(HANG_S)
            return routing_answer("legal-counsel", 0.9)
        raise AssertionError(self.name)


def _both(error_type: str) -> dict[str, str]:
    return {"dspy": error_type, "instructor": error_type}


FAULTS = [
    Fault("http-401", retryable=False, error_types=_both("[LLMHTTP401]")),
    Fault("http-429", retryable=True, error_types={"dspy": "[LMRateLimitError]", "instructor": "[RateLimitError]"}),
    Fault("http-500", retryable=True, error_types={"dspy": "[LMServerError]", "instructor": "[InternalServerError]"}),
    Fault("free-text", retryable=False, error_types=_both("[InvalidDecision]")),
    Fault("truncated", retryable=False, error_types=_both("[InvalidDecision]")),
    Fault("hung", retryable=True, error_types={"dspy": "[LMTransportError]", "instructor": "[APITimeoutError]"}),
]


class FaultyLLM:
    """Answers well unless the task names a fault for the decider that asks; counts calls per (case, decider)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages", [])
        decider = "instructor" if INSTRUCTOR_MARKER in json.dumps(messages) else "dspy"
        task = json.dumps(messages)  # a re-ask's last message is the correction: look at the whole chat
        for fault in FAULTS:
            for arm in ("dspy", "instructor"):
                case = f"case-{arm}-{fault.name}"
                if case in task:
                    with self._lock:
                        self.calls[(case, decider)] += 1
                    if decider == arm:
                        return fault.respond()
        return routing_answer("legal-counsel", 0.9)


def _key_in_arm(arm: str, name: str) -> str:
    """A routing key whose bucket lands in ``arm`` at a 50 % rollout."""
    for i in range(1000):
        key = f"{name}-{i}"
        if (rollout_bucket(key) < 5000) == (arm == "dspy"):
            return key
    raise AssertionError("no key found")


async def _outcome(stack: FaultStack, arm: str, fault: Fault) -> tuple[DecisionRecord | None, str | None, float]:
    case = f"case-{arm}-{fault.name}"
    request = stack.request(case, title=f"Review the NDA ({case})", routing_key=_key_in_arm(arm, case))
    started = time.monotonic()
    handle = await stack.start(request)
    try:
        return await handle.result(), None, time.monotonic() - started
    except WorkflowFailureError as err:
        cause = err.cause
        return None, f"{getattr(cause, 'type', '')}: {cause}", time.monotonic() - started


async def test_each_llm_fault_is_classified_for_both_deciders(fault_stack_factory: Any) -> None:
    llm = FaultyLLM()
    with ScriptedOpenAI(llm.respond) as server:
        stack: FaultStack = fault_stack_factory(server.base_url, DECIDER_ACTIVITY="remote")
        with stack.worker:
            stack.set_flags({"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 50})
            cases = [(arm, fault) for arm in ("dspy", "instructor") for fault in FAULTS]
            outcomes = await asyncio.wait_for(asyncio.gather(*(_outcome(stack, a, f) for a, f in cases)), 240)

    rows, problems = [], []
    for (arm, fault), (record, failure, took) in zip(cases, outcomes, strict=True):
        case = f"case-{arm}-{fault.name}"
        attempts = llm.calls[(case, arm)]
        [stored] = stack.rows(stack.request(case).workflow_id)
        error_text = stored.error or ""
        rows.append((arm, fault.name, attempts, stored.variant, stored.fallback_used, took, error_text))
        expected = 3 if fault.retryable else 1
        if arm == "instructor" and fault.name == "free-text":
            expected = 2  # one re-ask inside Instructor (MAX_REASKS), then not retried by Temporal
        checks = {
            f"{expected} LLM calls": attempts == expected,
            f"error names {fault.error_types[arm]}": fault.error_types[arm] in error_text,
            "no model output in the record": "legal team should take" not in error_text,
            "no API key in the record": "sk-fault-suite-key" not in error_text,
            "no API key in the failure": "sk-fault-suite-key" not in (failure or ""),
        }
        if arm == "dspy":
            checks["fell back to Instructor"] = (
                record is not None and record.fallback_used and record.variant == "instructor"
            )
            checks["Instructor decided"] = record is not None and record.decision is not None
            checks["Instructor called once"] = llm.calls[(case, "instructor")] == 1
        else:
            checks["DecisionFailed"] = record is None and failure is not None and "DecisionFailed" in failure
            checks["failure recorded"] = stored.decision is None and stored.variant == "instructor"
        if fault.name == "hung":
            # Each attempt ended by the client's timeout (3 s), far inside start-to-close (18 s).
            checks["ended by the client timeout"] = took < 3 * (LLM_TIMEOUT_S + 2) + 3 + 20
        problems += [f"{case}: expected {name}" for name, ok in checks.items() if not ok]
    print("\narm        fault       LLM calls  decided by  fallback  seconds  error")
    for arm, name, attempts, variant, fallback, took, err in rows:
        print(f"{arm:<10} {name:<11} {attempts:>9}  {variant:<10}  {fallback!s:<8}  {took:>7.1f}  {err[:90]}")
    assert not problems, "\n".join(problems)


async def test_a_refused_endpoint_fails_both_deciders_after_their_retries_and_is_recorded(
    fault_stack_factory: Any,
) -> None:
    stack: FaultStack = fault_stack_factory(f"http://127.0.0.1:{free_port()}/v1", DECIDER_ACTIVITY="remote")
    with stack.worker:
        stack.set_flags({"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100})
        request = stack.request("refused")
        with pytest.raises(WorkflowFailureError) as info:
            await (await stack.start(request)).result()
    assert "DecisionFailed" in str(getattr(info.value.cause, "type", ""))
    [stored] = stack.rows(request.workflow_id)
    assert stored.decision is None and stored.fallback_used and stored.assigned_variant == "dspy"
    assert stored.error is not None, stored.error
    dspy_error, instructor_error = stored.error.split("; ")
    assert dspy_error.startswith("dspy: LMTransportError") and "[LMTransportError]" in dspy_error
    assert instructor_error.startswith("instructor: APIConnectionError") and "[APIConnectionError]" in instructor_error
