"""ReoptimizeDelegationWorkflow on the real dev server: promote path, reject path, and a run with nothing new.

The LLM is the scripted OpenAI-compatible server: it answers the right assignee only
when the prompt carries few-shot demos (more than system + one user message) and "self"
otherwise. So the unoptimized module is right only on "self" tasks, a bootstrapped
challenger is right everywhere, and two optimized programs tie, which is exactly what
the promotion rule has to tell apart.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from delegation.activities.reoptimization import ReoptimizationActivities
from delegation.core.models import DelegationFeedback, DelegationRequest
from delegation.core.reoptimization import ReoptimizeInput, ReoptimizeReport
from delegation.deciders.endpoint import build_dspy_lm
from delegation.learning.dataset import DEFAULT_DATASET, load_examples
from delegation.learning.registry import ArtifactRegistry
from delegation.learning.training_set import TrainingSetStore
from delegation.store.decisions import DecisionStore
from delegation.worker.main import build_reoptimization_worker
from delegation.workflows.reoptimization import ReoptimizeDelegationWorkflow
from tests.support.factories import decision_record, endpoint_for
from tests.support.scripted_openai import ScriptedOpenAI, last_user_text, routing_answer

pytestmark = pytest.mark.asyncio

# Tasks that fail in production and come back with feedback; the first carries personal data.
FAILED_TASKS = {
    "Countersign the reseller agreement that Dana emailed": (
        "Dana (dana.w@example.org, +44 20 7946 0958) needs it back by Friday.",
        "legal-counsel",
    ),
    "Refund the duplicate charge on the Q3 conference booking": ("Charged twice, $640 each.", "finance-manager"),
    "The checkout API is timing out for EU customers": ("Since the 14:00 deploy.", "backend-engineer"),
}
SECOND_BATCH = {
    "Order a replacement laptop charger for the new analyst": ("Hers stopped working.", "it-ops-agent"),
    "Mock up the new onboarding screen for the mobile app": ("Two variants.", "product-designer"),
}


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A slice of the shipped examples: each split gets "self" tasks and delegated ones."""
    quota = {
        ("train", True): 4,
        ("train", False): 8,
        ("dev", True): 2,
        ("dev", False): 4,
        ("test", True): 2,
        ("test", False): 4,
    }
    chosen = []
    for example in load_examples(DEFAULT_DATASET):
        key = (example.split, example.label == "self")
        if example.assignees is None and quota.get(key, 0) > 0:
            quota[key] -= 1
            chosen.append(example.model_dump_json(exclude_none=True))
    assert not any(quota.values())
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(chosen) + "\n")
    return path


def labels_for(dataset: Path) -> dict[str, str]:
    labels = {e.title: e.label for e in load_examples(dataset)}
    labels.update({title: label for title, (_, label) in {**FAILED_TASKS, **SECOND_BATCH}.items()})
    return labels


def demo_aware(labels: dict[str, str]):  # type: ignore[no-untyped-def]
    def respond(body: dict) -> tuple[int, dict]:
        title = re.search(r"Title: (.*)", last_user_text(body))
        label = labels.get(title.group(1).strip(), "self") if title else "self"
        has_demos = len(body["messages"]) > 2
        return routing_answer(label if has_demos else "self")

    return respond


def fail_in_production(store: DecisionStore, tasks: dict[str, tuple[str, str]]) -> None:
    """Record a wrong decision for each task and the feedback that reassigns it."""
    for title, (description, correct) in tasks.items():
        request = DelegationRequest(task_id=f"t-{uuid.uuid4().hex[:10]}", title=title, description=description)
        store.record(decision_record(request, run_id=uuid.uuid4().hex), log_to_file=False)
        feedback = DelegationFeedback(task_id=request.task_id, outcome="reassigned", correct_assignee_id=correct)
        store.record_feedback(feedback, datetime.now(UTC))


async def run_once(
    env: WorkflowEnvironment, task_queue: str, options: ReoptimizeInput
) -> tuple[ReoptimizeReport, dict]:
    handle = await env.client.start_workflow(
        ReoptimizeDelegationWorkflow.run, options, id=f"reopt-{uuid.uuid4().hex}", task_queue=task_queue
    )
    report = await handle.result()
    memo = await (await handle.describe()).memo()
    return report, memo


async def test_reoptimization_promotes_a_better_challenger_then_rejects_a_tie_then_finds_nothing(
    temporal_env: WorkflowEnvironment, tmp_path: Path, small_dataset: Path
) -> None:
    store = DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
    (tmp_path / "no-builtin").mkdir()
    registry = ArtifactRegistry(store.database, builtin_dir=tmp_path / "no-builtin")
    training_sets = TrainingSetStore(store.database, small_dataset)
    with ScriptedOpenAI(demo_aware(labels_for(small_dataset))) as server:
        endpoint = endpoint_for(server.base_url)
        activities = ReoptimizationActivities(
            store=store,
            registry=registry,
            training_sets=training_sets,
            lm=build_dspy_lm(endpoint),
            endpoint=endpoint,
            dataset=small_dataset,
            margin=0.02,
            review_confidence_below=0.5,
            heartbeat_every_s=0.2,
        )
        task_queue = f"reopt-test-{uuid.uuid4().hex}"
        async with build_reoptimization_worker(temporal_env.client, activities, task_queue=task_queue):
            # 1. Three failed decisions: a challenger with demos beats the unoptimized module.
            fail_in_production(store, FAILED_TASKS)
            report, memo = await run_once(temporal_env, task_queue, ReoptimizeInput())
            assert report.outcome == "promoted", report.reason
            assert report.collected == 3 and report.training_set is not None and report.training_set.added == 3
            assert report.training_set.redactions >= 2
            assert report.champion_before is None and report.champion_after == report.new_version == 1
            assert report.scores is not None
            assert report.scores.challenger.dev_accuracy > report.scores.champion.dev_accuracy
            assert registry.champion() == 1
            manifest = registry.manifest(1)
            assert manifest.status == "champion" and manifest.optimizer_params["run_key"] == report.run_key
            assert manifest.optimizer_params["training_set_version"] == 1
            written = training_sets.rows.examples(report.training_set.version) or ""
            assert "dana.w@example.org" not in written and "7946" not in written and "[email]" in written
            assert memo["outcome"] == "promoted" and memo["new_version"] == 1
            assert memo["progress"].startswith("done: promoted")

            # 2. Two more: the new challenger ties the champion (both right everywhere): rejected with the reason.
            fail_in_production(store, SECOND_BATCH)
            report, memo = await run_once(temporal_env, task_queue, ReoptimizeInput())
            assert report.outcome == "rejected"
            assert report.collected == 2 and report.new_version == 2
            assert "below the margin 0.020" in report.reason
            assert registry.champion() == 1
            assert registry.manifest(2).status == "rejected" and registry.manifest(2).status_reason == report.reason
            assert report.training_set is not None and report.training_set.version == 2

            # 3. Nothing new since the last run: ends at once, saying so.
            report, memo = await run_once(temporal_env, task_queue, ReoptimizeInput())
            assert report.outcome == "no_new_failures" and report.collected == 0
            assert "no new failed decisions" in report.reason and report.new_version is None
            assert memo["outcome"] == "no_new_failures"
            assert registry.versions() == [1, 2]


async def test_review_lists_fallbacks_and_low_confidence_without_training_on_them(
    temporal_env: WorkflowEnvironment, tmp_path: Path, small_dataset: Path
) -> None:
    from delegation.core.models import DelegationDecision

    store = DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
    (tmp_path / "no-builtin").mkdir()
    registry = ArtifactRegistry(store.database, builtin_dir=tmp_path / "no-builtin")
    fallback = DelegationRequest(task_id="t-fallback", title="Book the offsite venue")
    unsure = DelegationRequest(task_id="t-unsure", title="Look into the odd invoice")
    sure = DelegationRequest(task_id="t-sure", title="Summarize the notes")
    decided = DelegationDecision(assignee_id="self", confidence=0.95)
    store.record(
        decision_record(fallback, variant="instructor", fallback_used=True, decision=decided), log_to_file=False
    )
    store.record(
        decision_record(unsure, decision=DelegationDecision(assignee_id="finance-manager", confidence=0.3)),
        log_to_file=False,
    )
    store.record(decision_record(sure, decision=decided), log_to_file=False)
    # A failed decision whose feedback names nobody: counted, not trained on.
    store.record_feedback(DelegationFeedback(task_id="t-sure", outcome="failed"), datetime.now(UTC))
    with ScriptedOpenAI(demo_aware(labels_for(small_dataset))) as server:
        endpoint = endpoint_for(server.base_url)
        activities = ReoptimizationActivities(
            store=store,
            registry=registry,
            training_sets=TrainingSetStore(store.database, small_dataset),
            lm=build_dspy_lm(endpoint),
            endpoint=endpoint,
            dataset=small_dataset,
            margin=0.02,
            review_confidence_below=0.5,
            heartbeat_every_s=0.2,
        )
        task_queue = f"reopt-test-{uuid.uuid4().hex}"
        async with build_reoptimization_worker(temporal_env.client, activities, task_queue=task_queue):
            report, _ = await run_once(temporal_env, task_queue, ReoptimizeInput())
        assert server.requests == []  # nothing to train on: no LLM call at all
    assert report.outcome == "no_new_failures"
    assert report.failed_without_assignee == 1
    reasons = {item.task_id: item.reason for item in report.review}
    assert reasons == {"t-fallback": "fallback: DSPy failed and Instructor answered", "t-unsure": "low confidence 0.30"}
    assert report.review_total == 2
