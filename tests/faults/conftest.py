"""The fault suite's stack: the real dev server, a worker subprocess, a scripted LLM over HTTP, the real store.

Each test gets a fresh task queue, data and log folder. The worker runs exactly as in
production (``python -m delegation.worker``); the test reads what it left behind (SQLite
rows, the training-data log, the Temporal history) from outside, as an operator would.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.rollout.flags import FeatureFlagProvider
from delegation.store.database import SQLiteDatabase
from delegation.store.decisions import DecisionStore, read_training_log
from delegation.store.flags import FlagStore
from delegation.workflows.client import start_delegation
from tests.support.flags import set_flags
from tests.support.worker_process import WorkerProcess, worker_env

# The LLM client's timeout in the worker: short, so a hung endpoint costs seconds, not a minute.
LLM_TIMEOUT_S = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


@dataclass
class FaultStack:
    """One worker subprocess on its own queue and folders, and what it writes, seen from outside."""

    client: Client
    env: dict[str, str]
    task_queue: str
    folder: Path
    worker: WorkerProcess
    prefix: str

    @property
    def db_path(self) -> Path:
        return self.folder / "data" / "decisions.test.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.folder / "logs" / "delegation_decisions.test.log"

    def store(self) -> DecisionStore:
        return DecisionStore(SQLiteDatabase(self.db_path), self.log_path)

    def set_flags(self, values: dict[str, Any]) -> None:
        """Change the live flags the way ``delegation flags set`` does, on the worker's own store."""
        set_flags(FeatureFlagProvider(FlagStore(SQLiteDatabase(self.db_path), "test")), values, who="fault-test")

    def request(self, name: str, title: str = "Sign the supplier contract", **fields: Any) -> DelegationRequest:
        return DelegationRequest.model_validate({"task_id": f"{self.prefix}-{name}", "title": title, **fields})

    async def start(self, request: DelegationRequest) -> WorkflowHandle[Any, DecisionRecord]:
        return await start_delegation(self.client, request, task_queue=self.task_queue)

    def rows(self, workflow_id: str) -> list[DecisionRecord]:
        return self.store().get(workflow_id)

    def logged(self, workflow_id: str) -> tuple[int, int]:
        """(lines in the training-data log for this workflow, records after the documented dedupe)."""
        if not self.log_path.exists():
            return 0, 0
        raw = sum(f'"workflow_id":"{workflow_id}"' in line for line in self.log_path.read_text().splitlines())
        records, _ = read_training_log(self.log_path)
        return raw, sum(r.workflow_id == workflow_id for r in records)


@pytest.fixture
def fault_stack_factory(temporal_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[Any]:
    """Builds a ``FaultStack`` against an LLM base URL (on ``temporal``, default the session's dev server).

    Extra settings go to the worker's environment; its worker is stopped at the end.
    """
    stacks: list[FaultStack] = []

    def build(llm_base_url: str, *, temporal: Client | None = None, **extra: str) -> FaultStack:
        queue = f"faults-{uuid.uuid4().hex[:10]}"
        folder = tmp_path / f"stack-{len(stacks)}"
        settings = dict(
            APP_ENV="test",
            DATA_DIR=str(folder / "data"),
            LOG_DIR=str(folder / "logs"),
            TEMPORAL_ADDRESS=(temporal or temporal_env.client).service_client.config.target_host,
            TEMPORAL_TASK_QUEUE=queue,
            REOPTIMIZATION_TASK_QUEUE=f"{queue}-reopt",
            LLM_BASE_URL=llm_base_url,
            LLM_API_KEY="sk-fault-suite-key",
            LLM_MODEL="scripted",
            LLM_TIMEOUT_S=str(LLM_TIMEOUT_S),
            LOG_LEVEL="INFO",
        )
        env = worker_env(dict(os.environ), **{**settings, **extra})  # extra settings win
        stack = FaultStack(
            client=temporal or temporal_env.client,
            env=env,
            task_queue=queue,
            folder=folder,
            worker=WorkerProcess(env, folder / "worker.log"),
            prefix=uuid.uuid4().hex[:8],
        )
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.worker.stop()
