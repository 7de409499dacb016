"""Both deciders on the real embedded model (Qwen2.5-Coder-1.5B Q4_K_M), through the real workflow."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from delegation.core.models import DelegationRequest
from delegation.core.team import default_team
from delegation.deciders.endpoint import LLMEndpoint
from delegation.store.decisions import DecisionStore
from delegation.worker.main import build_dependencies, build_worker
from delegation.workflows.client import decide
from tests.support.factories import SHIPPED_CHAMPION
from tests.support.flags import flag_provider, set_flags
from tests.support.store_queries import count_decisions

pytestmark = pytest.mark.e2e

OUTAGE = "The production database is down and the checkout API returns 500 errors"


@pytest.mark.parametrize("variant", ["instructor", "dspy"])
async def test_decision_on_the_embedded_model(
    variant: str, embedded_endpoint: LLMEndpoint, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    from delegation.core.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        LOCAL_LLM_PORT=int(embedded_endpoint.base_url.rsplit(":", 1)[1].split("/")[0]),
        LLM_TIMEOUT_S=embedded_endpoint.timeout_s,
        DATA_DIR=tmp_path,
    )
    # This worker's data folder is the test's own: give it the key the server wrote for this start.
    settings.embedded_llm_key_path.parent.mkdir(parents=True, exist_ok=True)
    settings.embedded_llm_key_path.write_text(embedded_endpoint.api_key.get_secret_value(), encoding="ascii")
    deps = build_dependencies(settings)
    assert deps.endpoint.embedded and deps.endpoint.base_url == embedded_endpoint.base_url
    deps.flags = flag_provider(tmp_path)
    set_flags(deps.flags, {"USE_DSPY_DELEGATION": variant == "dspy", "DSPY_ROLLOUT_PERCENTAGE": 100})
    deps.store = DecisionStore(tmp_path / "d.sqlite3", tmp_path / "d.log")
    task_queue = f"delegation-e2e-{uuid.uuid4().hex}"
    worker = build_worker(temporal_env.client, deps, task_queue=task_queue, llm_concurrency=1, llm_timeout_s=150)
    request = DelegationRequest(task_id=f"e2e-{variant}-{uuid.uuid4().hex[:8]}", title=OUTAGE, priority="urgent")
    async with worker:
        record = await decide(temporal_env.client, request, task_queue=task_queue)
    print(f"\n{variant}: {record.decision} in {record.latency_ms:.0f} ms")
    assert record.variant == variant and not record.fallback_used, record.error
    assert record.decision is not None
    assert record.decision.assignee_id in {a.id for a in default_team()}
    assert 0.0 <= record.decision.confidence <= 1.0
    # The confidence is the model's probability of the id, not a number it wrote.
    assert record.decision.confidence_source in ("logprobs", "calibrated_logprobs")
    assert record.decision.reasoning_source == "candidate_description"
    assert record.model == "qwen2.5-coder-1.5b-instruct"
    # A fresh clone serves the shipped champion on the DSPy route.
    expected_version = f"optimized_delegation_v{SHIPPED_CHAMPION}" if variant == "dspy" else "instructor-v2"
    assert record.program_version == expected_version
    assert count_decisions(deps.store, record.workflow_id) == 1


async def test_a_warm_slot_is_saved_under_the_data_folder_and_restored(embedded_endpoint: LLMEndpoint) -> None:
    from delegation.core.settings import PROJECT_ROOT
    from delegation.deciders.endpoint import build_async_openai
    from delegation.deciders.instructor_decider import InstructorDecider
    from delegation.deciders.prompt_slots import OFFLINE_SLOT, restore_slot, save_slot

    endpoint = embedded_endpoint.offline()  # the offline slot: the other tests' serving slots stay as they are
    decider = InstructorDecider(build_async_openai(endpoint), endpoint)
    await decider.decide(DelegationRequest(task_id="e2e-slot", title=OUTAGE))
    filename = f"e2e-{uuid.uuid4().hex[:8]}.bin"
    saved = PROJECT_ROOT / "data" / "llm_slots" / filename
    try:
        assert await save_slot(endpoint.base_url, OFFLINE_SLOT, filename, 60, endpoint.api_key.get_secret_value())
        assert saved.is_file() and saved.stat().st_size > 0  # in the folder, not beside it
        assert await restore_slot(endpoint.base_url, OFFLINE_SLOT, filename, 60, endpoint.api_key.get_secret_value())
        assert not await restore_slot(
            endpoint.base_url, OFFLINE_SLOT, "missing.bin", 60, endpoint.api_key.get_secret_value()
        )
    finally:
        saved.unlink(missing_ok=True)
