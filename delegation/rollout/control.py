"""Audited rollout changes: moving the DSPy share, rolling back, and the audit trail.

Every change goes through the live flags (which win over the environment), so it reaches
running workers at their next decision, including workers started with the flags in their
environment. A change is one compare-and-set transaction on the store's flags row with its
audit row (who, host, when, from, to, why, outcome), on SQLite as on PostgreSQL; a
concurrent change makes it recompute and retry, audited.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from delegation.rollout.flags import FeatureFlagProvider, FeatureFlags, validated_update
from delegation.store.flags import FlagAuditRow

GUARDRAIL_ACTOR = "guardrail"


class AuditEntry(BaseModel):
    """One change of the rollout flags (with the database: one attempt, and how it ended)."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    who: str
    action: str
    environment: str
    before: dict[str, bool | int]
    after: dict[str, bool | int]
    reason: str = ""
    host: str = ""
    outcome: str = "applied"
    from_version: int | None = None
    to_version: int | None = None

    @classmethod
    def from_row(cls, row: FlagAuditRow) -> AuditEntry:
        return cls(
            at=row.at,
            who=row.who,
            action=row.action,
            environment=row.environment,
            before=row.before,
            after=row.after,
            reason=row.reason,
            host=row.host,
            outcome=row.outcome,
            from_version=row.from_version,
            to_version=row.to_version,
        )


class RolloutControl:
    """Moves the live flags with their audit rows; used by the CLI and by the guardrail."""

    def __init__(self, provider: FeatureFlagProvider, environment: str) -> None:
        self.provider = provider
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

    def guardrail_rollback(self, reason: str) -> AuditEntry | None:
        """The guardrail's rollback, made only while DSPy still serves: None when another one got there first.

        The check and the write are one compare-and-set, so workers that judge at the same
        moment roll back (and audit) once between them.
        """
        updates: dict[str, Any] = {"DSPY_ROLLOUT_PERCENTAGE": 0}
        return self._store_change(
            "rollback", updates, who=GUARDRAIL_ACTOR, reason=reason, only_if=lambda f: f.dspy_rollout_percentage > 0
        )

    def change(self, action: str, updates: dict[str, Any], *, who: str, reason: str = "") -> AuditEntry:
        """Apply ``updates`` to the live flags with the audit entry of the change."""
        entry = self._store_change(action, updates, who=who, reason=reason, only_if=None)
        assert entry is not None  # an unconditional change always applies or raises
        return entry

    def _store_change(
        self,
        action: str,
        updates: dict[str, Any],
        *,
        who: str,
        reason: str,
        only_if: Callable[[FeatureFlags], bool] | None,
    ) -> AuditEntry | None:
        store = self.provider.store

        def resolve(live: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
            before = self.provider.resolve(live)
            if only_if is not None and not only_if(before):
                return None
            new_values = validated_update(live, updates)
            return new_values, before.as_env(), self.provider.resolve(new_values).as_env()

        row = store.change(resolve, who=who, host=socket.gethostname(), action=action, reason=reason)
        return AuditEntry.from_row(row) if row is not None else None

    def history(self, limit: int | None = None) -> list[AuditEntry]:
        """Audit entries, oldest first (the last ``limit`` when given)."""
        return [AuditEntry.from_row(row) for row in self.provider.store.history(limit)]

    def last_guardrail_trip(self) -> AuditEntry | None:
        """The guardrail's last rollback, if no operator has changed the rollout since."""
        for entry in reversed(self.history()):
            if entry.outcome != "applied":
                continue
            if entry.who == GUARDRAIL_ACTOR:
                return entry
            moved = any(
                entry.before.get(k) != entry.after.get(k) for k in ("USE_DSPY_DELEGATION", "DSPY_ROLLOUT_PERCENTAGE")
            )
            if moved or entry.action.startswith(("set", "rollback")):
                return None
        return None
