"""The rollout plan's go-live targets (``ROLLOUT_PLAN.md``), defined once.

The A/B report's criteria, the guardrail's default limits, ``delegation compare`` and the
benchmarks all judge by these. Standard library only.
"""

from __future__ import annotations

IMPROVEMENT_TARGET = 0.15
"""The optimized program's dev score must beat the base module's by more than this (relative)."""
ERROR_RATE_TARGET = 0.02
"""Share of DSPy-assigned decisions DSPy did not make (a fallback, or no decision)."""
LATENCY_TARGET_MS = 2000.0
"""Decision latency."""
CONFIDENCE_TARGET = 0.80
"""Average confidence of DSPy's decisions."""
ACCURACY_TARGET = 0.88
"""Share of correct decisions (the plan's comparison table)."""
