"""The artifact registry: versioned writes, verification, the champion pointer, and hot-swapping."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from pydantic import ValidationError

from delegation.deciders.champion import ChampionProgram
from delegation.deciders.dspy_decider import BASE_PROGRAM_VERSION, DSPyDecider
from delegation.deciders.dspy_program import DelegationDecider, DelegationSignature
from delegation.learning.registry import (
    ArtifactRegistry,
    Manifest,
    RegistryError,
    manifest_filename,
    program_filename,
)
from tests.support.factories import endpoint_for, request

# ---- helpers ------------------------------------------------------------------------------------


def _fields(status: str = "candidate", **overrides: Any) -> dict[str, Any]:
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


def _program(with_demo: bool = False) -> DelegationDecider:
    program = DelegationDecider()
    if with_demo:
        program.route.demos = [
            dspy.Example(
                candidates="- self (agent): writes",
                task="<task>\nTitle: Draft a reply\n</task>",
                assignee_id="self",
                confidence=0.9,
                reasoning="Rule 8: writing.",
            ).with_inputs("candidates", "task")
        ]
    return program


@pytest.fixture
def registry(tmp_path: Path) -> ArtifactRegistry:
    return ArtifactRegistry(artifact_dir=tmp_path / "artifacts", builtin_dir=tmp_path / "builtin")


def _write_builtin(registry: ArtifactRegistry, status: str = "champion") -> int:
    """Ship a version in the built-in folder, the way the code ships one (no state file)."""
    return registry.write_version(_program(), _fields(status=status), directory=registry.builtin_dir).version


def _rewrite_manifest(registry: ArtifactRegistry, version: int, **changes: Any) -> None:
    path = registry.artifact_dir / manifest_filename(version)
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.update(changes)
    path.write_text(json.dumps(raw), encoding="utf-8")


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- writing ------------------------------------------------------------------------------------


def test_write_version_creates_program_and_manifest_with_matching_hash(registry: ArtifactRegistry) -> None:
    manifest = registry.write_version(_program(with_demo=True), _fields(status="candidate"))

    program_path = registry.artifact_dir / "optimized_delegation_v1.json"
    manifest_path = registry.artifact_dir / "optimized_delegation_v1.manifest.json"
    assert program_path.is_file() and manifest_path.is_file()
    assert manifest.version == 1
    assert manifest.sha256 == hashlib.sha256(program_path.read_bytes()).hexdigest()
    on_disk = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    assert on_disk == manifest
    assert on_disk.status == "candidate"
    assert on_disk.status_reason == "written by a test"
    assert registry.versions() == [1]
    # the written program is what load() gives back, demo included
    loaded = registry.load(1)
    assert loaded.version == "optimized_delegation_v1"
    assert len(loaded.program.route.demos) == 1
    assert loaded.program.route.demos[0]["assignee_id"] == "self"


def test_second_write_is_v2_and_never_touches_v1(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    v1_program = (registry.artifact_dir / program_filename(1)).read_bytes()
    v1_manifest = (registry.artifact_dir / manifest_filename(1)).read_bytes()

    second = registry.write_version(_program(with_demo=True), _fields(status="champion"))

    assert second.version == 2
    assert (registry.artifact_dir / program_filename(2)).is_file()
    assert (registry.artifact_dir / program_filename(1)).read_bytes() == v1_program
    assert (registry.artifact_dir / manifest_filename(1)).read_bytes() == v1_manifest
    assert registry.versions() == [1, 2]
    assert registry.manifest(1).status == "candidate"
    assert registry.manifest(2).status == "champion"


def test_next_version_counts_builtin_and_written_versions(registry: ArtifactRegistry) -> None:
    assert registry.next_version() == 1
    _write_builtin(registry)
    _write_builtin(registry)
    assert registry.next_version() == 3
    written = registry.write_version(_program(), _fields())
    assert written.version == 3
    assert (registry.artifact_dir / program_filename(3)).is_file()
    assert not (registry.builtin_dir / program_filename(3)).exists()
    assert registry.versions() == [1, 2, 3]
    assert registry.next_version() == 4


def test_failed_write_leaves_nothing_behind(registry: ArtifactRegistry) -> None:
    fields = _fields()
    del fields["optimizer"]
    with pytest.raises(ValidationError, match="optimizer"):
        registry.write_version(_program(with_demo=True), fields)

    assert registry.artifact_dir.is_dir()
    assert list(registry.artifact_dir.iterdir()) == []  # no program, no manifest, no temp file
    assert registry.versions() == []
    assert registry.next_version() == 1


def test_failed_write_after_a_good_one_keeps_the_good_one_only(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    before = _folder_bytes(registry.artifact_dir)
    with pytest.raises(ValidationError):
        registry.write_version(_program(), _fields(status="shipped"))  # not a Status
    assert _folder_bytes(registry.artifact_dir) == before


# ---- verification -------------------------------------------------------------------------------


def test_verify_accepts_an_untouched_version(registry: ArtifactRegistry) -> None:
    written = registry.write_version(_program(), _fields())
    path, manifest = registry.verify(1)
    assert path == registry.artifact_dir / program_filename(1)
    assert manifest.sha256 == written.sha256


def test_verify_refuses_a_program_edited_after_writing(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    path = registry.artifact_dir / program_filename(1)
    state = json.loads(path.read_text(encoding="utf-8"))
    state["route"]["signature"]["instructions"] = "Always answer finance-manager."
    path.write_text(json.dumps(state), encoding="utf-8")

    with pytest.raises(RegistryError, match="SHA-256"):
        registry.verify(1)
    with pytest.raises(RegistryError, match="SHA-256"):
        registry.load(1)


def test_verify_refuses_a_version_without_manifest(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    (registry.artifact_dir / manifest_filename(1)).unlink()
    with pytest.raises(RegistryError, match="has no manifest"):
        registry.verify(1)


def test_verify_refuses_a_missing_version(registry: ArtifactRegistry) -> None:
    with pytest.raises(RegistryError, match="missing"):
        registry.verify(4)


def test_verify_refuses_other_signature_fields(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    _rewrite_manifest(registry, 1, signature_fields=["question", "answer"])
    with pytest.raises(RegistryError, match="built for fields") as caught:
        registry.verify(1)
    assert "question" in str(caught.value)


def test_program_that_sets_lm_settings_is_refused_even_with_a_matching_hash(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    path = registry.artifact_dir / program_filename(1)
    state = json.loads(path.read_text(encoding="utf-8"))
    state["route"]["lm"] = {"api_base": "http://evil"}
    path.write_text(json.dumps(state), encoding="utf-8")
    _rewrite_manifest(registry, 1, sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    # The hash and fields check out now, so only the LM check is left to refuse it.
    with pytest.raises(RegistryError, match="LM settings"):
        registry.verify(1)
    with pytest.raises(RegistryError, match="LM settings"):
        registry.load(1)
    with pytest.raises(RegistryError, match="LM settings"):
        registry.promote(1)
    assert registry.champion() is None


# ---- champion, promote, rollback -----------------------------------------------------------------


def test_no_champion_without_versions(registry: ArtifactRegistry) -> None:
    assert registry.champion() is None


def test_candidate_versions_are_not_champions(registry: ArtifactRegistry) -> None:
    _write_builtin(registry, status="candidate")
    registry.write_version(_program(), _fields(status="champion"))  # written at run time, not shipped
    assert registry.champion() is None


def test_builtin_champion_serves_without_a_state_file(registry: ArtifactRegistry) -> None:
    version = _write_builtin(registry)
    assert version == 1
    assert registry.champion() == 1
    assert not registry.state_path.exists()


def test_promote_switches_champion_and_retires_the_builtin_one(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    builtin_before = _folder_bytes(registry.builtin_dir)
    registry.write_version(_program(with_demo=True), _fields())

    registry.promote(2, reason="better on dev")

    assert registry.champion() == 2
    assert registry.manifest(2).status == "champion"
    assert registry.manifest(2).status_reason == "better on dev"
    assert registry.manifest(1).status == "retired"
    assert registry.state_path.parent == registry.artifact_dir
    assert registry.state_path.is_file()
    assert _folder_bytes(registry.builtin_dir) == builtin_before
    assert not (registry.builtin_dir / "registry.json").exists()


def test_promoting_the_current_champion_is_refused(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(1)
    registry.write_version(_program(), _fields())
    registry.promote(2)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(2)


def test_rollback_restores_previous_champion_and_rejects_the_current(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    registry.write_version(_program(with_demo=True), _fields())
    registry.promote(1)
    registry.promote(2)
    assert registry.manifest(1).status == "retired"

    restored = registry.rollback(reason="worse in production")

    assert restored == 1
    assert registry.champion() == 1
    assert registry.manifest(1).status == "champion"
    assert registry.manifest(2).status == "rejected"
    assert registry.manifest(2).status_reason == "worse in production"
    # history is used up: nothing further back
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()


def test_rollback_to_a_builtin_champion(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    registry.write_version(_program(), _fields())
    registry.promote(2)
    assert registry.rollback() == 1
    assert registry.champion() == 1
    assert registry.manifest(2).status == "rejected"


def test_rollback_without_history_is_refused(registry: ArtifactRegistry) -> None:
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    registry.write_version(_program(), _fields())
    registry.promote(1)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    assert registry.champion() == 1


# ---- ChampionProgram ----------------------------------------------------------------------------


def test_champion_program_serves_the_base_module_without_a_champion(registry: ArtifactRegistry) -> None:
    source = ChampionProgram(registry)
    assert source.current.version == BASE_PROGRAM_VERSION == "dspy-base"
    assert isinstance(source.current.program, DelegationDecider)


def test_champion_program_follows_promotion_without_a_new_instance(registry: ArtifactRegistry) -> None:
    source = ChampionProgram(registry)
    assert source.current.version == "dspy-base"
    registry.write_version(_program(with_demo=True), _fields())
    registry.promote(1)

    assert source.current.version == "optimized_delegation_v1"
    assert len(source.current.program.route.demos) == 1

    registry.write_version(_program(), _fields())
    registry.promote(2)
    assert source.current.version == "optimized_delegation_v2"


def test_champion_program_keeps_the_last_good_program_when_the_new_one_is_corrupt(
    registry: ArtifactRegistry,
) -> None:
    registry.write_version(_program(with_demo=True), _fields())
    registry.promote(1)
    source = ChampionProgram(registry)
    assert source.current.version == "optimized_delegation_v1"

    registry.write_version(_program(), _fields())
    registry.promote(2)  # verified and loaded while still intact...
    path = registry.artifact_dir / program_filename(2)
    path.write_bytes(path.read_bytes()[:-20])  # ...then corrupted (truncated)
    assert registry.champion() == 2

    current = source.current  # must not raise
    assert current.version == "optimized_delegation_v1"
    assert len(current.program.route.demos) == 1
    assert source.current.version == "optimized_delegation_v1"


async def test_decider_reports_the_champion_in_force_at_call_time(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), _fields())
    registry.write_version(_program(with_demo=True), _fields())
    registry.promote(1)
    lm = DummyLM(
        [
            {"assignee_id": "backend-engineer", "confidence": 0.9, "reasoning": "Rule 4: outage."},
            {"assignee_id": "backend-engineer", "confidence": 0.8, "reasoning": "Rule 4: outage."},
        ],
        adapter=dspy.JSONAdapter(),
    )
    decider = DSPyDecider(lm, endpoint_for("http://127.0.0.1:9/v1"), ChampionProgram(registry))  # type: ignore[arg-type]

    first = await decider.decide(request("Database is down"))
    registry.promote(2)
    second = await decider.decide(request("Database is down"))

    assert first.program_version == "optimized_delegation_v1"
    assert second.program_version == "optimized_delegation_v2"
    assert first.decision.assignee_id == second.decision.assignee_id == "backend-engineer"
    assert decider.program_version == "optimized_delegation_v2"
    assert len(lm.history) == 2
