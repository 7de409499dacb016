"""Small builders shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from delegation.core.models import Assignee, DecisionRecord, DelegationRequest
from delegation.deciders.endpoint import LLMEndpoint
from delegation.deciders.label_first import AnswerConstraint

if TYPE_CHECKING:
    from delegation.learning.registry import ArtifactRegistry

TEST_API_KEY = "sk-test-do-not-leak-4f9c2e"


def endpoint_for(
    base_url: str,
    *,
    api_key: str = TEST_API_KEY,
    timeout_s: float = 5.0,
    constraint: AnswerConstraint = "json_schema",
    generated_reason: bool = False,
) -> LLMEndpoint:
    return LLMEndpoint(
        base_url=base_url,
        api_key=SecretStr(api_key),
        model="scripted-model",
        timeout_s=timeout_s,
        max_tokens=128,
        embedded=False,
        answer_constraint=constraint,
        generated_reason=generated_reason,
    )


def request(title: str = "Fix the production database outage", **kwargs: object) -> DelegationRequest:
    fields: dict[str, object] = {"task_id": "task-1", "title": title}
    fields.update(kwargs)
    return DelegationRequest.model_validate(fields)


# The version shipped as champion in delegation/learning/artifacts (what a fresh clone serves).
SHIPPED_CHAMPION = 5

CUSTOM_TEAM = [
    Assignee(id="self", name="Assistant", kind="agent", description="Writes, replies, summarizes and schedules."),
    Assignee(id="logistics", name="Logistics", kind="human", description="Carriers, warehouses, shipping."),
    Assignee(id="support-lead", name="Support lead", kind="human", description="Escalated customer complaints."),
]


def decision_record(request: DelegationRequest, **fields: Any) -> DecisionRecord:
    """A complete DecisionRecord for ``request``; keyword arguments replace any field."""
    values: dict[str, Any] = {
        "workflow_id": request.workflow_id,
        "run_id": "run-1",
        "task_id": request.task_id,
        "request": request,
        "decision": None,
        "variant": "dspy",
        "assigned_variant": "dspy",
        "program_version": "v1",
        "model": "test-model",
        "latency_ms": 12.5,
        "fallback_used": False,
        "error": None,
        "bucket": 42,
        "rollout_percentage": 10,
        "decided_at": datetime.now(UTC),
    }
    return DecisionRecord(**{**values, **fields})


def sqlite_registry(folder: Path, builtin_dir: Path | None = None) -> ArtifactRegistry:
    """A registry in a SQLite store of its own under ``folder`` (the shipped folder unless ``builtin_dir``)."""
    from delegation.learning.registry import BUILTIN_DIR, ArtifactRegistry
    from delegation.store.database import SQLiteDatabase

    return ArtifactRegistry(SQLiteDatabase(folder / "store.sqlite3"), builtin_dir=builtin_dir or BUILTIN_DIR)


def manifest_fields(status: str = "candidate", **overrides: Any) -> dict[str, Any]:
    """A complete set of manifest fields for ``ArtifactRegistry.write_version``; keywords replace any field."""
    import dspy

    from delegation.deciders.dspy_program import DelegationSignature

    fields: dict[str, Any] = {
        "optimizer": "labeled",
        "optimizer_params": {"max_demos": 1, "seed": 7},
        "train_sha256": "a" * 64,
        "dev_sha256": "b" * 64,
        "train_size": 10,
        "dev_size": 5,
        "base_dev_score": 0.5,
        "optimized_dev_score": 0.75,
        "model": "scripted-model",
        "dspy_version": dspy.__version__,
        "signature_fields": list(DelegationSignature.fields),
        "parent_version": None,
        "status": status,
        "status_reason": "written by a test",
    }
    fields.update(overrides)
    return fields
