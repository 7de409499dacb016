"""Two worker processes, each with its own data folder, sharing one PostgreSQL store (``DATABASE_URL``).

Each worker serves a task queue of its own, so the test knows which one decided. The CLI runs
as a third process with the same ``DATABASE_URL``: a rollout change typed there reaches both
workers at their next decision, and the report counts both workers' decisions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.workflows.client import start_delegation
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer


def _env(base: dict[str, str], **values: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("USE_DSPY", "DSPY_", "LLM_", "DATABASE_URL"))}
    env.update(values)
    return env


@contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "delegation.worker"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while "worker serving task queues" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "delegation.cli.main", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"delegation {' '.join(args)} failed: {done.stdout}\n{done.stderr}"
    return done.stdout


async def test_a_rollout_typed_anywhere_reaches_both_workers_and_the_report_counts_both(
    temporal_env: WorkflowEnvironment, shared_database_url: str, tmp_path: Path
) -> None:
    queues = {name: f"delegation-two-{name}-{uuid.uuid4().hex[:8]}" for name in ("a", "b")}
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as llm:
        common = _env(
            dict(os.environ),
            APP_ENV="test",
            DATABASE_URL=shared_database_url,
            TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
            LLM_BASE_URL=llm.base_url,
            LLM_API_KEY="test-key",
            LLM_MODEL="scripted",
            LOG_LEVEL="INFO",
        )
        envs = {
            name: {
                **common,
                "DATA_DIR": str(tmp_path / f"host-{name}" / "data"),
                "LOG_DIR": str(tmp_path / f"host-{name}" / "logs"),
                "TEMPORAL_TASK_QUEUE": queue,
                "REOPTIMIZATION_TASK_QUEUE": f"{queue}-reopt",
            }
            for name, queue in queues.items()
        }
        operator = {**common, "DATA_DIR": str(tmp_path / "operator" / "data"), "LOG_DIR": str(tmp_path / "operator")}

        async def decide(name: str, label: str) -> DecisionRecord:
            request = DelegationRequest(task_id=f"{label}-{name}-{uuid.uuid4().hex[:8]}", title="Sign the lease")
            handle = await start_delegation(temporal_env.client, request, task_queue=queues[name])
            return await handle.result()

        with _worker(envs["a"], tmp_path / "worker-a.log"), _worker(envs["b"], tmp_path / "worker-b.log"):
            before = [await decide(name, "before") for name in ("a", "b")]
            assert [r.assigned_variant for r in before] == ["instructor", "instructor"]

            _cli(operator, "rollout", "set", "100", "--reason", "two-worker test")
            on = [await decide(name, "on") for name in ("a", "b")]
            assert [r.assigned_variant for r in on] == ["dspy", "dspy"]

            _cli(operator, "rollout", "rollback", "--reason", "two-worker test")
            rolled_back_at = time.monotonic()
            after = [await decide(name, "after") for name in ("a", "b")]
            reached = time.monotonic() - rolled_back_at
            assert [r.assigned_variant for r in after] == ["instructor", "instructor"]
            assert reached < 2.0, f"the rollback took {reached:.2f} s to show in both workers' decisions"
            print(f"rollback → next decision on both workers routed to Instructor: {reached * 1000:.0f} ms")

        report = json.loads(_cli(operator, "report", "--json").strip().splitlines()[-1])
        assert report["decisions"] == 6, report
        history = json.loads(_cli(operator, "rollout", "status", "--json"))["recent_changes"]
        assert [(e["action"], e["outcome"]) for e in history] == [("set 100%", "applied"), ("rollback", "applied")]
        assert all(e["host"] and e["who"] for e in history)
        trail = [json.loads(line) for line in _cli(operator, "rollout", "history", "--json").splitlines()]
        assert [(e["action"], e["reason"], e["to_version"]) for e in trail] == [
            ("set 100%", "two-worker test", 1),
            ("rollback", "two-worker test", 2),
        ]
        # Each host logged its own decisions; none went to the operator's folder.
        for name in ("a", "b"):
            log = tmp_path / f"host-{name}" / "logs" / "delegation_decisions.test.log"
            assert len(log.read_text().splitlines()) == 3, name
