"""50 decisions at once over HTTP against a slow endpoint, batch after batch, on one worker process.

What must hold: no DSPy settings error under concurrency (``dspy.context`` only), the event
loop stays responsive (the worker's own lag monitor, under 1 s), and the worker's resident
memory stays flat across batches once warm (DSPy's prompt history is off).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from tests.faults.conftest import FaultStack
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer

BATCH = 50
BATCHES = 4
ANSWER_DELAY_S = 0.3
# Allocator noise on a warm CPython process: a leak of a prompt per decision (a few KB each,
# 100 decisions between the measurements) would show well above it.
MAX_RSS_GROWTH_MB = 12.0


def _slow_answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    time.sleep(ANSWER_DELAY_S)
    return routing_answer("legal-counsel", 0.9)


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) / 1024


async def test_fifty_concurrent_decisions_keep_the_loop_responsive_and_memory_flat(fault_stack_factory: Any) -> None:
    with ScriptedOpenAI(_slow_answer) as llm:
        stack: FaultStack = fault_stack_factory(
            llm.base_url, DECIDER_ACTIVITY="local", LLM_MAX_CONCURRENCY="50", LOOP_LAG_REPORT_S="1"
        )
        with stack.worker:
            stack.set_flags({"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 50})
            rss, seconds = [], []
            for batch in range(BATCHES):
                requests = [
                    stack.request(f"load-{batch}-{i}", title=f"Review the NDA number {i}") for i in range(BATCH)
                ]
                started = time.monotonic()
                handles = [await stack.start(r) for r in requests]
                records = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 180)
                seconds.append(time.monotonic() - started)
                assert all(r.decision is not None and not r.fallback_used and r.error is None for r in records)
                assert {r.variant for r in records} == {"instructor", "dspy"}
                await asyncio.sleep(1.5)  # one more lag report covers the batch's tail
                rss.append(_rss_mb(stack.worker.pid))
            output = stack.worker.output()

    lags = [float(m) for m in re.findall(r"event loop lag: max ([\d.]+) ms", output)]
    assert lags, "the worker reported no event-loop lag"
    assert "dspy.settings" not in output and "can only be changed by the thread" not in output
    growth = rss[-1] - rss[1]
    print(
        f"\n{BATCHES} batches of {BATCH} concurrent decisions, endpoint {ANSWER_DELAY_S * 1000:.0f} ms: "
        f"batch seconds {[round(s, 1) for s in seconds]}; worker RSS MB {[round(r, 1) for r in rss]} "
        f"(growth after warm-up {growth:+.1f} MB); event-loop lag max {max(lags):.0f} ms "
        f"over {len(lags)} one-second windows"
    )
    assert max(lags) < 1000, f"event-loop lag reached {max(lags):.0f} ms"
    assert growth < MAX_RSS_GROWTH_MB, f"worker RSS grew {growth:.1f} MB across warm batches: {rss}"
