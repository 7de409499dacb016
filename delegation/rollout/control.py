"""Audited rollout changes: moving the DSPy share, rolling back, and the audit log.

Every change goes through the live flags file (which wins over the environment), so it
reaches running workers at their next decision, including workers started with the
flags in their environment. Every change is appended to an audit log (JSON lines):
who, when, from, to, why.
"""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from delegation.rollout.flags import FeatureFlagProvider, FeatureFlags, write_flags_file
from delegation.store.files import append_line

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

    def change(self, action: str, updates: dict[str, Any], *, who: str, reason: str = "") -> AuditEntry:
        """Write ``updates`` to the live flags file and append the audit entry of the change."""
        before = self.current().as_env()
        write_flags_file(self.provider.flags_file, updates, updated_by=who)
        after = self.provider.read().flags.as_env()
        entry = AuditEntry(
            at=datetime.now(UTC),
            who=who,
            action=action,
            environment=self.environment,
            before=before,
            after=after,
            reason=reason,
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
            moved = any(
                entry.before.get(k) != entry.after.get(k) for k in ("USE_DSPY_DELEGATION", "DSPY_ROLLOUT_PERCENTAGE")
            )
            if moved or entry.action.startswith(("set", "rollback")):
                return None
        return None
