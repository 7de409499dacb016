"""What counts as an error and which latencies count, for the guardrail and the A/B report alike.

Arms are the *assigned* variant (intention-to-treat): a request the flags gave to DSPy stays
on the DSPy arm when the Instructor fallback answered it, and counts as a DSPy error there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from delegation.core.models import DecisionRecord


def is_arm_error(record: DecisionRecord) -> bool:
    """No decision at all, or, on the DSPy arm, a decision DSPy did not make (the Instructor fallback)."""
    return record.decision is None or (record.assigned_variant == "dspy" and record.fallback_used)


def answered_latencies(records: Iterable[DecisionRecord]) -> list[float]:
    """Latencies of the decisions that have one: a failed decision records 0 ms, which is no latency.

    A fallback records the Instructor's time only (its failed DSPy attempt is not measured).
    """
    return [r.latency_ms for r in records if r.decision is not None]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1), linearly interpolated between order statistics; None without values."""
    if not len(values):
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q * 100))
