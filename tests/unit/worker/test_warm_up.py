"""The worker's warm-up fills each decider's llama.cpp slots and saves the prefix, under its own long timeout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from delegation.deciders.dspy_decider import DSPyDecider, load_program
from delegation.deciders.endpoint import build_async_openai, build_dspy_lm
from delegation.deciders.instructor_decider import InstructorDecider
from delegation.deciders.prompt_slots import SlotPlan
from delegation.store.decisions import DecisionStore
from delegation.worker.main import WARM_UP_TIMEOUT_S, WorkerDependencies, warm_up
from tests.support.factories import endpoint_for
from tests.support.flags import flag_provider
from tests.support.scripted_openai import ScriptedOpenAI, last_user_text, routing_answer


def _deps(server: ScriptedOpenAI, tmp_path: Path) -> WorkerDependencies:
    endpoint = replace(endpoint_for(server.base_url, constraint="grammar"), slot_plan=SlotPlan())
    return WorkerDependencies(
        endpoint=endpoint,
        instructor=InstructorDecider(build_async_openai(endpoint), endpoint),
        dspy=DSPyDecider(build_dspy_lm(endpoint), endpoint, load_program(None)),
        store=DecisionStore(tmp_path / "d.sqlite3", tmp_path / "d.log"),
        flags=flag_provider(tmp_path),
    )


def _responder(body: dict) -> tuple[int, dict]:
    grammar = "grammar" in body
    answer = "ops" if "- ops (human)" in last_user_text(body) else "self"
    return routing_answer(answer, 0.9, grammar=grammar)


async def test_every_slot_is_warmed_and_the_default_slots_are_saved(tmp_path: Path) -> None:
    lines: list[str] = []
    with ScriptedOpenAI(_responder) as server:
        await warm_up(_deps(server, tmp_path), on_step=lines.append)
    slots = [r.get("id_slot") for r in server.requests]
    assert slots == [2, 3, 0, 1]  # instructor default, instructor custom, dspy default, dspy custom
    # A restore is tried first for each slot; the default-team slots are saved after their prefill.
    restores = [p for p in server.paths if "action=restore" in p]
    saves = [p for p in server.paths if "action=save" in p]
    assert [p.split("?")[0] for p in restores] == ["/slots/2", "/slots/3", "/slots/0", "/slots/1"]
    assert [p.split("?")[0] for p in saves] == ["/slots/2", "/slots/0"]
    assert len(lines) == 4 and all("warm-up of the" in line for line in lines)
    assert WARM_UP_TIMEOUT_S > 60  # a first prefill of the longest prefix takes about a minute on 2 cores


async def test_a_failing_endpoint_does_not_stop_the_worker(tmp_path: Path) -> None:
    with ScriptedOpenAI(lambda _: (500, {"error": {"message": "down"}})) as server:
        await warm_up(_deps(server, tmp_path))  # logged, not raised
    assert len(server.requests) == 4


def test_a_decider_attempt_outlasts_every_call_it_may_make() -> None:
    """Defect 10: with LLM_TIMEOUT_S=60 an Instructor answer and its re-ask may take 120 s."""
    from delegation.deciders.policy import MAX_LLM_CALLS_PER_ATTEMPT, MAX_REASKS
    from delegation.worker.main import decide_attempt_timeout_s

    assert MAX_LLM_CALLS_PER_ATTEMPT == 1 + MAX_REASKS
    assert decide_attempt_timeout_s(60.0) > (1 + MAX_REASKS) * 60.0
    assert decide_attempt_timeout_s(60.0, queue_wait_s=300.0) > 300.0 + (1 + MAX_REASKS) * 60.0
