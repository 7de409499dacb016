"""The cheapest workflow of the same shape as DelegationWorkflow: three no-op local activities.

``bench_routing.py`` runs it to show what the dev server and the SDK cost on this machine
before any of the service's own work (flags, validation, recording).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(value: str) -> str:
    """Returns its input."""
    return value


@workflow.defn(name="BenchFloorWorkflow")
class FloorWorkflow:
    """flags → decide → record, with nothing in them."""

    @workflow.run
    async def run(self, value: str) -> str:
        for _ in range(3):
            value = await workflow.execute_local_activity(noop, value, start_to_close_timeout=timedelta(seconds=5))
        return value
