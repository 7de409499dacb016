"""Event-loop lag of the worker: how late a timer wakes up, the sign of blocking code on the loop.

Activities are async and share the worker's one loop with Temporal's pollers and
heartbeats; a blocking call in one of them delays all of that. The monitor sleeps a short
interval, measures how much later than asked it woke, and logs the worst lag of each
reporting window (a warning above ``warn_ms``).
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger


async def monitor_loop_lag(*, interval_s: float = 0.1, report_every_s: float = 60.0, warn_ms: float = 500.0) -> None:
    """Run until cancelled, logging ``event loop lag: max … ms`` once per ``report_every_s``."""
    worst_ms = 0.0
    window_started = time.monotonic()
    while True:
        asked = time.monotonic()
        await asyncio.sleep(interval_s)
        lag_ms = max(0.0, (time.monotonic() - asked - interval_s) * 1000)
        worst_ms = max(worst_ms, lag_ms)
        if time.monotonic() - window_started >= report_every_s:
            log = logger.warning if worst_ms > warn_ms else logger.info
            log("event loop lag: max {:.1f} ms over the last {:.0f} s", worst_ms, report_every_s)
            worst_ms = 0.0
            window_started = time.monotonic()
