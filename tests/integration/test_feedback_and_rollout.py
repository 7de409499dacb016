"""Feedback, rollout moves and the guardrail on a real Temporal dev server, with the worker running throughout."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from delegation.cli.main import app
from delegation.core.models import DelegationFeedback
from delegation.deciders.dspy_decider import DSPyDecider, load_program
from delegation.deciders.endpoint import build_async_openai
from delegation.deciders.instructor_decider import InstructorDecider
from delegation.rollout.control import GUARDRAIL_ACTOR, RolloutControl
from delegation.rollout.flags import FeatureFlagProvider
from delegation.rollout.guardrail import GuardrailLimits
from delegation.store.decisions import DecisionStore
from delegation.worker.main import WorkerDependencies, build_worker
from delegation.workflows.client import send_feedback
from tests.integration.conftest import Harness
from tests.integration.test_delegation_workflow import by_title
from tests.support.factories import endpoint_for
from tests.support.flags import flag_provider
from tests.support.scripted_openai import Responder, ScriptedOpenAI
from tests.support.store_queries import rows

runner = CliRunner()

GOOD_DSPY = {"Schedule": {"assignee_id": "self", "confidence": 0.9, "reasoning": "Rule 8: scheduling."}}
# Fails validation (not a candidate): DSPy's decision is refused and Instructor answers instead.
BAD_DSPY = {"Invoice": {"assignee_id": "attacker", "confidence": 1.0, "reasoning": "as instructed"}}


def _application_error(err: BaseException) -> ApplicationError:
    """The first ApplicationError in the cause chain."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    raise AssertionError(f"no ApplicationError in the cause chain of {err!r}")


def _feedback_rows(store: DecisionStore) -> list[tuple]:
    return rows(store, "SELECT workflow_id, run_id, outcome, correct_assignee_id FROM feedback")


def _audit(control: RolloutControl) -> list[dict]:
    """The audit trail's entries, leaving out the test's own set-up (``h.set_flags``)."""
    return [e.model_dump() for e in control.history() if e.who != "test"]


def _live(flags: FeatureFlagProvider) -> dict:
    live = flags.store.read()
    assert live is not None
    return live.values


# ---- feedback -----------------------------------------------------------------------------------


async def test_feedback_is_stored_once_through_the_workflow(harness) -> None:  # type: ignore[no-untyped-def]
    async with harness(by_title(Database="backend-engineer"), []) as h:
        record = await h.decide(h.request("Database is down for all customers", name="db"))
        assert record.decision is not None and record.decision.assignee_id == "backend-engineer"

        feedback = DelegationFeedback(
            task_id=record.task_id, outcome="reassigned", correct_assignee_id="it-ops-agent", comment="infra issue"
        )
        receipt = await asyncio.wait_for(send_feedback(h.client, feedback, task_queue=h.task_queue), 60)
        assert receipt.result == "stored"
        assert (receipt.workflow_id, receipt.run_id, receipt.task_id) == (
            record.workflow_id,
            record.run_id,
            record.task_id,
        )
        assert receipt.decided_assignee_id == "backend-engineer" and receipt.variant == "instructor"
        assert receipt.correct_assignee_id == "it-ops-agent"

        again = await asyncio.wait_for(send_feedback(h.client, feedback, task_queue=h.task_queue), 60)
        assert again.result == "unchanged"
        # The same feedback named by workflow id is the same feedback.
        by_workflow = DelegationFeedback(
            workflow_id=record.workflow_id,
            outcome="reassigned",
            correct_assignee_id="it-ops-agent",
            comment="infra issue",
        )
        assert (await asyncio.wait_for(send_feedback(h.client, by_workflow, task_queue=h.task_queue), 60)).result == (
            "unchanged"
        )
        assert _feedback_rows(h.store) == [(record.workflow_id, record.run_id, "reassigned", "it-ops-agent")]
        (stored,) = h.store.decisions_with_feedback()
        assert stored.record == record
        assert stored.feedback is not None and stored.feedback.feedback.comment == "infra issue"

        changed = DelegationFeedback(task_id=record.task_id, outcome="accepted")
        updated = await asyncio.wait_for(send_feedback(h.client, changed, task_queue=h.task_queue), 60)
        assert updated.result == "updated"
        assert _feedback_rows(h.store) == [(record.workflow_id, record.run_id, "accepted", None)]


async def test_feedback_on_an_unknown_task_fails_with_unknown_decision(harness) -> None:  # type: ignore[no-untyped-def]
    async with harness(by_title(), []) as h:
        feedback = DelegationFeedback(task_id=f"{h.prefix}-never-decided", outcome="failed")
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(send_feedback(h.client, feedback, task_queue=h.task_queue), 30)
        cause = _application_error(caught.value)
        assert cause.type == "UnknownDecision"
        assert cause.non_retryable
        assert f"{h.prefix}-never-decided" in cause.message
        assert _feedback_rows(h.store) == []


async def test_feedback_with_a_non_candidate_fails_with_invalid_feedback(harness) -> None:  # type: ignore[no-untyped-def]
    async with harness(by_title(Printer="it-ops-agent"), []) as h:
        record = await h.decide(h.request("Printer on floor 2 is jammed", name="pr"))
        feedback = DelegationFeedback(task_id=record.task_id, outcome="reassigned", correct_assignee_id="ceo")
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(send_feedback(h.client, feedback, task_queue=h.task_queue), 30)
        cause = _application_error(caught.value)
        assert cause.type == "InvalidFeedback"
        assert cause.non_retryable
        assert "'ceo'" in cause.message and "it-ops-agent" in cause.message and "backend-engineer" in cause.message
        assert _feedback_rows(h.store) == []


async def test_feedback_cli_reaches_the_worker(  # type: ignore[no-untyped-def]
    harness, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(by_title(Hiring="people-ops"), []) as h:
        record = await h.decide(h.request("Hiring plan for two engineers", name="hire"))
        monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
        monkeypatch.setenv("TEMPORAL_NAMESPACE", temporal_env.client.namespace)
        monkeypatch.setenv("TEMPORAL_TASK_QUEUE", h.task_queue)
        # The command runs its own event loop: keep it off this test's loop.
        ok = await asyncio.to_thread(
            runner.invoke,
            app,
            ["feedback", record.task_id, "--outcome", "reassigned", "--correct-assignee", "research-agent", "--json"],
        )
        assert ok.exit_code == 0, ok.output
        receipt = json.loads(ok.output.strip().splitlines()[-1])
        assert receipt["result"] == "stored" and receipt["correct_assignee_id"] == "research-agent"

        unknown = await asyncio.to_thread(runner.invoke, app, ["feedback", f"{h.prefix}-nope", "--outcome", "failed"])
        assert unknown.exit_code == 2, unknown.output
        assert f"{h.prefix}-nope" in unknown.output

        missing = await asyncio.to_thread(runner.invoke, app, ["feedback", record.task_id, "--outcome", "reassigned"])
        assert missing.exit_code == 2, missing.output
        assert "correct_assignee_id" in missing.output
        assert _feedback_rows(h.store) == [(record.workflow_id, record.run_id, "reassigned", "research-agent")]


# ---- rollback reaching a running worker ---------------------------------------------------------


async def test_rollback_reaches_the_running_worker(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with harness(by_title(Schedule="self"), GOOD_DSPY) as h:
        h.set_flags(USE_DSPY_DELEGATION=True, DSPY_ROLLOUT_PERCENTAGE=100)
        before = await h.decide(h.request("Schedule the team retro", name="before"))
        assert (before.assigned_variant, before.variant, before.rollout_percentage) == ("dspy", "dspy", 100)

        # Another process's view of the same store, as the CLI would have.
        control = RolloutControl(flag_provider(tmp_path), "test")
        control.rollback(who="ops@host", reason="answers look wrong")

        after = await h.decide(h.request("Schedule the planning meeting", name="after"))
        assert (after.assigned_variant, after.variant, after.rollout_percentage) == ("instructor", "instructor", 0)
        assert after.fallback_used is False
        (entry,) = _audit(control)
        assert entry["who"] == "ops@host" and entry["reason"] == "answers look wrong"
        assert entry["before"]["DSPY_ROLLOUT_PERCENTAGE"] == 100 and entry["after"]["DSPY_ROLLOUT_PERCENTAGE"] == 0


async def test_cli_rollback_wins_over_the_worker_environment(  # type: ignore[no-untyped-def]
    harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("USE_DSPY_DELEGATION", "true")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "100")
    async with harness(by_title(Schedule="self"), GOOD_DSPY) as h:
        assert h.flags.store.read() is None, "only the environment turns DSPy on"
        monkeypatch.setenv("DECISION_DB_FILE", str(tmp_path / "flags.sqlite3"))  # the CLI on the worker's store
        before = await h.decide(h.request("Schedule the team retro", name="before"))
        assert (before.assigned_variant, before.rollout_percentage) == ("dspy", 100)

        rolled = runner.invoke(app, ["rollout", "rollback", "--reason", "incident 42"])
        assert rolled.exit_code == 0, rolled.output
        assert _live(h.flags) == {"DSPY_ROLLOUT_PERCENTAGE": 0}
        after = await h.decide(h.request("Schedule the planning meeting", name="after"))
        assert (after.assigned_variant, after.variant, after.rollout_percentage) == ("instructor", "instructor", 0)

        disabled = runner.invoke(app, ["rollout", "rollback", "--disable", "--reason", "incident 42"])
        assert disabled.exit_code == 0, disabled.output
        assert _live(h.flags) == {"DSPY_ROLLOUT_PERCENTAGE": 0, "USE_DSPY_DELEGATION": False}
        off = await h.decide(h.request("Schedule the offsite", name="off"))
        assert (off.assigned_variant, off.rollout_percentage) == ("instructor", 0)

        # The store moves the running worker back up as well.
        resumed = runner.invoke(app, ["rollout", "set", "100", "--reason", "fixed"])
        assert resumed.exit_code == 0, resumed.output
        again = await h.decide(h.request("Schedule the review", name="again"))
        assert (again.assigned_variant, again.variant, again.rollout_percentage) == ("dspy", "dspy", 100)

    entries = _audit(RolloutControl(h.flags, "test"))
    assert [(e["action"], e["reason"]) for e in entries] == [
        ("rollback", "incident 42"),
        ("rollback --disable", "incident 42"),
        ("set 100%", "fixed"),
    ]
    # The first entry saw the environment's flags as the state before.
    assert entries[0]["before"]["USE_DSPY_DELEGATION"] is True
    assert entries[0]["before"]["DSPY_ROLLOUT_PERCENTAGE"] == 100


# ---- the guardrail ------------------------------------------------------------------------------


@asynccontextmanager
async def guarded_worker(
    env: WorkflowEnvironment,
    tmp_path: Path,
    responder: Responder,
    dspy_answers: dict[str, dict],
    limits: GuardrailLimits,
) -> AsyncIterator[tuple[Harness, RolloutControl]]:
    """The harness's worker, built with small guardrail limits and a flags store of its own."""
    with ScriptedOpenAI(responder) as server:
        endpoint = endpoint_for(server.base_url)
        lm = DummyLM(dspy_answers, adapter=dspy.JSONAdapter())
        flags = flag_provider(tmp_path)
        store = DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
        deps = WorkerDependencies(
            endpoint=endpoint,
            instructor=InstructorDecider(build_async_openai(endpoint), endpoint),
            dspy=DSPyDecider(lm, endpoint, load_program(None)),  # type: ignore[arg-type]
            store=store,
            flags=flags,
            environment="test",
            guardrail_limits=limits,
        )
        task_queue = f"delegation-test-{uuid.uuid4().hex}"
        worker = build_worker(
            env.client, deps, task_queue=task_queue, llm_concurrency=8, llm_timeout_s=10, queue_timeout_s=10
        )
        async with worker:
            yield Harness(env.client, task_queue, store, flags, server, lm), deps.rollout_control()


SMALL_LIMITS = GuardrailLimits(window=5, min_decisions=3, max_error_rate=0.5, max_p95_latency_ms=60_000)


async def test_guardrail_rolls_dspy_back_after_failures(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with guarded_worker(temporal_env, tmp_path, by_title(Invoice="finance-manager"), BAD_DSPY, SMALL_LIMITS) as (
        h,
        control,
    ):
        h.set_flags(USE_DSPY_DELEGATION=True, DSPY_ROLLOUT_PERCENTAGE=100, DSPY_GUARDRAIL_ENABLED=True)
        failing = [await h.decide(h.request(f"Invoice {i} from the print shop", name=f"inv{i}")) for i in range(3)]
        for record in failing:
            assert (record.assigned_variant, record.variant, record.fallback_used) == ("dspy", "instructor", True)
        assert _audit(control) == [], "fewer than min_decisions: no judgement yet"

        tripped = await h.decide(h.request("Invoice 4 from the print shop", name="inv4"))
        assert (tripped.assigned_variant, tripped.variant) == ("instructor", "instructor")
        assert tripped.fallback_used is False and tripped.rollout_percentage == 0
        assert tripped.decision is not None and tripped.decision.assignee_id == "finance-manager"
        assert len(h.server.requests) == 4, "three fallbacks and one direct Instructor decision"

        live = h.flags.store.read()
        assert live is not None and live.values["DSPY_ROLLOUT_PERCENTAGE"] == 0
        assert live.updated_by == GUARDRAIL_ACTOR
        (entry,) = _audit(control)
        assert entry["who"] == GUARDRAIL_ACTOR and entry["action"] == "rollback"
        assert "error rate 100.0% > 50.0% (3 of 3)" in entry["reason"]
        assert entry["before"]["DSPY_ROLLOUT_PERCENTAGE"] == 100 and entry["after"]["DSPY_ROLLOUT_PERCENTAGE"] == 0
        trip = control.last_guardrail_trip()
        assert trip is not None and trip.reason == entry["reason"]

        # It stays rolled back, and is audited once.
        later = await h.decide(h.request("Invoice 5 from the print shop", name="inv5"))
        assert later.assigned_variant == "instructor"
        assert len(_audit(control)) == 1

        # An operator moving the rollout again starts a fresh window: the old failures no longer count.
        control.set_percentage(100, who="ops@host", reason="fixed the prompt")
        assert control.last_guardrail_trip() is None
        resumed = await h.decide(h.request("Invoice 6 from the print shop", name="inv6"))
        assert (resumed.assigned_variant, resumed.rollout_percentage) == ("dspy", 100)
        assert [e["who"] for e in _audit(control)] == [GUARDRAIL_ACTOR, "ops@host"]


async def test_guardrail_off_does_not_roll_back(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with guarded_worker(temporal_env, tmp_path, by_title(Invoice="finance-manager"), BAD_DSPY, SMALL_LIMITS) as (
        h,
        control,
    ):
        h.set_flags(USE_DSPY_DELEGATION=True, DSPY_ROLLOUT_PERCENTAGE=100, DSPY_GUARDRAIL_ENABLED=False)
        records = [await h.decide(h.request(f"Invoice {i} from the print shop", name=f"inv{i}")) for i in range(5)]
        for record in records:
            assert (record.assigned_variant, record.variant, record.fallback_used) == ("dspy", "instructor", True)
            assert record.rollout_percentage == 100
        assert _live(h.flags)["DSPY_ROLLOUT_PERCENTAGE"] == 100
        assert _audit(control) == []
        assert control.last_guardrail_trip() is None


async def test_guardrail_leaves_a_healthy_dspy_serving(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with guarded_worker(temporal_env, tmp_path, by_title(), GOOD_DSPY, SMALL_LIMITS) as (h, control):
        h.set_flags(USE_DSPY_DELEGATION=True, DSPY_ROLLOUT_PERCENTAGE=100, DSPY_GUARDRAIL_ENABLED=True)
        records = [await h.decide(h.request(f"Schedule meeting {i}", name=f"m{i}")) for i in range(5)]
        assert [(r.assigned_variant, r.variant, r.fallback_used) for r in records] == [("dspy", "dspy", False)] * 5
        assert _live(h.flags)["DSPY_ROLLOUT_PERCENTAGE"] == 100
        assert _audit(control) == []
        assert h.server.requests == []


async def test_concurrent_decisions_roll_back_once(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """A burst arriving as the guardrail trips: one rollback, and no decision goes to DSPy after it.

    Guards the bug the unit test ``test_requests_routed_while_the_guardrail_trips_go_to_instructor``
    names: requests that read the flags before the rollback and waited for the guardrail's lock
    were once routed to DSPy.
    """
    async with guarded_worker(temporal_env, tmp_path, by_title(Invoice="finance-manager"), BAD_DSPY, SMALL_LIMITS) as (
        h,
        control,
    ):
        h.set_flags(USE_DSPY_DELEGATION=True, DSPY_ROLLOUT_PERCENTAGE=100, DSPY_GUARDRAIL_ENABLED=True)
        for i in range(3):
            await h.decide(h.request(f"Invoice {i} from the print shop", name=f"inv{i}"))
        burst = await asyncio.gather(
            *(h.decide(h.request(f"Invoice {i} from the print shop", name=f"inv{i}")) for i in range(3, 9))
        )
        assert [r.assigned_variant for r in burst] == ["instructor"] * 6
        (entry,) = _audit(control)
        assert entry["who"] == GUARDRAIL_ACTOR
        assert _live(h.flags)["DSPY_ROLLOUT_PERCENTAGE"] == 0
