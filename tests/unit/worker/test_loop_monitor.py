"""The worker's event-loop lag monitor reports how long blocking code held the loop."""

from __future__ import annotations

import asyncio
import re
import time

from loguru import logger

from delegation.worker.loop_monitor import monitor_loop_lag


async def test_a_blocking_call_shows_as_lag_in_the_next_report() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    task = asyncio.create_task(monitor_loop_lag(interval_s=0.02, report_every_s=0.3))
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.4)  # code that blocks the loop
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
        logger.remove(sink)
    lags = [float(m) for line in lines for m in re.findall(r"event loop lag: max ([\d.]+) ms", line)]
    assert lags and max(lags) >= 350, lines
