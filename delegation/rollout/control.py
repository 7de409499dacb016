"""Rollout operations: moving the DSPy share, rolling back, the audit log, and the guardrail check.

Every change goes through the live flags file (which wins over the environment), so it
reaches running workers at their next decision, including workers started with the
flags in their environment. Every change is appended to an audit log (JSON lines):
who, when, from, to, why.
"""

from __future__ import annotations

import getpass
import socket
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from delegation.rollout.flags import FeatureFlagProvider, FeatureFlags, write_flags_file
from delegation.store.files import append_line
from delegation.core.models import DecisionRecord

GUARDRAIL_ACTOR = "guardrail"


class AuditEntry(BaseModel):
    """One change of the rollout flags."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    who: str
    action: str
    environment: str
    before: dict[str, bool | int]
    after: dict[str, bool | int]
    reason: str = ""


def operator_name() -> str:
    """``user@host`` of the person running the command (no secrets, no environment dump)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class RolloutControl:
    """Moves the live flags and writes the audit log; used by the CLI and by the guardrail."""

    def __init__(self, provider: FeatureFlagProvider, audit_log: Path, environment: str) -> None:
        self.provider = provider
        self.audit_log = audit_log
        self.environment = environment

    def current(self) -> FeatureFlags:
        """The flags in force now."""
        return self.provider.read().flags

    def set_percentage(self, percentage: int, *, who: str, reason: str = "") -> AuditEntry:
        """Move DSPy to ``percentage`` % (turning ``USE_DSPY_DELEGATION`` on when above 0)."""
        updates: dict[str, Any] = {"DSPY_ROLLOUT_PERCENTAGE": percentage}
        if percentage > 0:
            updates["USE_DSPY_DELEGATION"] = True
        return self.change(f"set {percentage}%", updates, who=who, reason=reason)

    def rollback(self, *, disable: bool = False, who: str, reason: str = "") -> AuditEntry:
        """DSPy to 0 % now; ``disable`` also turns ``USE_DSPY_DELEGATION`` off."""
        updates: dict[str, Any] = {"DSPY_ROLLOUT_PERCENTAGE": 0}
        if disable:
            updates["USE_DSPY_DELEGATION"] = False
        return self.change("rollback" + (" --disable" if disable else ""), updates, who=who, reason=reason)

    def set_guardrail(self, enabled: bool, *, who: str) -> AuditEntry:
        """Switch the automatic rollback on or off."""
        return self.change(f"guardrail {'on' if enabled else 'off'}", {"DSPY_GUARDRAIL_ENABLED": enabled}, who=who)

    def change(self, action: str, updates: dict[str, Any], *, who: str, reason: str = "") -> AuditEntry:
        before = self.current().as_env()
        write_flags_file(self.provider.flags_file, updates, updated_by=who)
        after = self.provider.read().flags.as_env()
        entry = AuditEntry(
            at=datetime.now(UTC), who=who, action=action, environment=self.environment,
            before=before, after=after, reason=reason,
        )
        append_line(self.audit_log, entry.model_dump_json())
        return entry

    def history(self, limit: int | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first (the last ``limit`` when given); unreadable lines are skipped."""
        try:
            lines = self.audit_log.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(AuditEntry.model_validate_json(line))
            except ValueError:
                continue
        return entries[-limit:] if limit else entries

    def last_guardrail_trip(self) -> AuditEntry | None:
        """The guardrail's last rollback, if no operator has changed the rollout since."""
        for entry in reversed(self.history()):
            if entry.who == GUARDRAIL_ACTOR:
                return entry
            moved = any(entry.before.get(k) != entry.after.get(k) for k in ("USE_DSPY_DELEGATION", "DSPY_ROLLOUT_PERCENTAGE"))
            if moved or entry.action.startswith(("set", "rollback")):
                return None
        return None


class GuardrailLimits(BaseModel):
    """When the guardrail rolls DSPy back: over its last ``window`` decisions (at least ``min_decisions``)."""

    model_config = ConfigDict(frozen=True)

    window: int = Field(default=50, ge=1)
    min_decisions: int = Field(default=20, ge=1)
    max_error_rate: float = Field(default=0.02, ge=0, le=1)
    max_p95_latency_ms: float = Field(default=2000.0, gt=0)

    @model_validator(mode="after")
    def _can_trip(self) -> GuardrailLimits:
        if self.min_decisions > self.window:
            raise ValueError(
                f"GUARDRAIL_MIN_DECISIONS ({self.min_decisions}) is larger than GUARDRAIL_WINDOW ({self.window}): "
                "the guardrail could never judge"
            )
        return self


class GuardrailVerdict(BaseModel):
    """The guardrail's reading of DSPy's recent decisions."""

    model_config = ConfigDict(frozen=True)

    tripped: bool
    decisions: int
    error_rate: float | None
    p95_latency_ms: float | None
    reason: str


def is_dspy_error(record: DecisionRecord) -> bool:
    """A decision assigned to DSPy that DSPy did not make: a fallback or no decision at all."""
    return record.decision is None or record.fallback_used or record.variant != "dspy"


def check_guardrail(records: Sequence[DecisionRecord], limits: GuardrailLimits) -> GuardrailVerdict:
    """Judge DSPy's last decisions (those the flags assigned to DSPy, newest first or in any order)."""
    window = list(records)[: limits.window]
    n = len(window)
    if n < limits.min_decisions:
        return GuardrailVerdict(
            tripped=False, decisions=n, error_rate=None, p95_latency_ms=None,
            reason=f"{n} DSPy decisions since the last rollout change; the guardrail judges from {limits.min_decisions}",
        )
    errors = sum(is_dspy_error(r) for r in window)
    error_rate = errors / n
    latencies = [r.latency_ms for r in window if not is_dspy_error(r)]
    p95 = _p95(latencies)
    problems = []
    if error_rate > limits.max_error_rate:
        problems.append(f"error rate {error_rate:.1%} > {limits.max_error_rate:.1%} ({errors} of {n})")
    if p95 is not None and p95 > limits.max_p95_latency_ms:
        problems.append(f"p95 latency {p95:.0f} ms > {limits.max_p95_latency_ms:.0f} ms")
    summary = f"over DSPy's last {n} decisions: error rate {error_rate:.1%}, p95 latency " + (
        f"{p95:.0f} ms" if p95 is not None else "n/a"
    )
    if problems:
        return GuardrailVerdict(
            tripped=True, decisions=n, error_rate=error_rate, p95_latency_ms=p95,
            reason="; ".join(problems) + f" (last {n} DSPy decisions)",
        )
    return GuardrailVerdict(tripped=False, decisions=n, error_rate=error_rate, p95_latency_ms=p95, reason=summary)


def _p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    # Same definition as the A/B report: linear interpolation between order statistics.
    return float(statistics.quantiles(values, n=100, method="inclusive")[94])

