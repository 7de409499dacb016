"""The artifact registry on both store backends: versioned writes, verification, the champion pointer, hot-swapping."""

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
from delegation.deciders.dspy_program import DelegationDecider
from delegation.learning.registry import (
    REOPTIMIZATION_ACTOR,
    ArtifactRegistry,
    Manifest,
    RegistryConflict,
    RegistryError,
    program_filename,
)
from delegation.store.database import Database
from tests.support.factories import endpoint_for, manifest_fields, request

# ---- helpers ------------------------------------------------------------------------------------


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
def registry(database: Database, tmp_path: Path) -> ArtifactRegistry:
    """A registry on each backend, with a shipped folder of its own."""
    return ArtifactRegistry(database, builtin_dir=tmp_path / "builtin")


def _row(registry: ArtifactRegistry, version: int) -> tuple[str, str]:
    with registry.store.database.transaction() as tx:
        row = tx.fetchone("SELECT program_json, manifest_json FROM artifact_versions WHERE version = ?", (version,))
    assert row is not None
    return row[0], row[1]


def _tamper(
    registry: ArtifactRegistry, version: int, *, program: str | None = None, manifest: str | None = None
) -> None:
    """Edit a stored version behind the registry's back (what a bad hand-edit of the database does)."""
    old_program, old_manifest = _row(registry, version)
    with registry.store.database.transaction() as tx:
        tx.execute(
            "UPDATE artifact_versions SET program_json = ?, manifest_json = ? WHERE version = ?",
            (
                program if program is not None else old_program,
                manifest if manifest is not None else old_manifest,
                version,
            ),
        )


def _write_builtin(registry: ArtifactRegistry, status: str = "champion") -> int:
    """Ship a version in the built-in folder, the way the code ships one (no state file)."""
    return registry.write_version(_program(), manifest_fields(status=status), directory=registry.builtin_dir).version


def _rewrite_manifest(registry: ArtifactRegistry, version: int, **changes: Any) -> None:
    raw = json.loads(_row(registry, version)[1])
    raw.update(changes)
    _tamper(registry, version, manifest=json.dumps(raw))


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- writing ------------------------------------------------------------------------------------


def test_write_version_stores_program_and_manifest_with_matching_hash(
    registry: ArtifactRegistry, tmp_path: Path
) -> None:
    manifest = registry.write_version(_program(with_demo=True), manifest_fields(status="candidate"))

    program_json, manifest_json = _row(registry, 1)
    assert manifest.version == 1
    assert manifest.sha256 == hashlib.sha256(program_json.encode("utf-8")).hexdigest()
    on_disk = Manifest.model_validate_json(manifest_json)
    assert on_disk == manifest
    assert not (tmp_path / "builtin").exists()  # run-time versions never touch the shipped folder
    assert on_disk.status == "candidate"
    assert on_disk.status_reason == "written by a test"
    assert registry.versions() == [1]
    # the written program is what load() gives back, demo included
    loaded = registry.load(1)
    assert loaded.version == "optimized_delegation_v1"
    assert len(loaded.program.route.demos) == 1
    assert loaded.program.route.demos[0]["assignee_id"] == "self"


def test_the_demo_layout_comes_back_from_the_manifest_and_older_manifests_read_as_shared(
    registry: ArtifactRegistry,
) -> None:
    registry.write_version(_program(with_demo=True), manifest_fields(demo_layout="by_list"))
    registry.write_version(_program(with_demo=True), manifest_fields())  # a manifest written before the field
    assert registry.manifest(1).demo_layout == "by_list"
    assert registry.load(1).program.demo_layout == "by_list"
    assert registry.manifest(2).demo_layout == "shared"
    assert registry.load(2).program.demo_layout == "shared"


def test_a_manifest_with_an_unknown_demo_layout_is_refused_by_field() -> None:
    with pytest.raises(ValidationError, match="demo_layout"):
        Manifest.model_validate(
            {
                **manifest_fields(demo_layout="by_team"),
                "version": 1,
                "sha256": "c" * 64,
                "created_at": "2026-12-08T00:00:00Z",
            }
        )


def test_second_write_is_v2_and_never_touches_v1(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    v1 = _row(registry, 1)

    second = registry.write_version(_program(with_demo=True), manifest_fields(status="champion"))

    assert second.version == 2
    assert _row(registry, 1) == v1
    assert registry.versions() == [1, 2]
    assert registry.manifest(1).status == "candidate"
    assert registry.manifest(2).status == "champion"


def test_version_numbers_count_shipped_and_stored_versions(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    _write_builtin(registry)
    assert sorted(p.name for p in registry.builtin_dir.iterdir()) == [
        "optimized_delegation_v1.json",
        "optimized_delegation_v1.manifest.json",
        "optimized_delegation_v2.json",
        "optimized_delegation_v2.manifest.json",
    ]
    written = registry.write_version(_program(), manifest_fields())
    assert written.version == 3
    assert registry.store.version_numbers() == [3]
    assert not (registry.builtin_dir / program_filename(3)).exists()
    assert registry.versions() == [1, 2, 3]


def test_concurrent_writers_get_distinct_versions(database: Database, tmp_path: Path) -> None:
    """Two registries (two hosts) writing at once: every version number once, every program kept."""
    from concurrent.futures import ThreadPoolExecutor

    registries = [ArtifactRegistry(database, builtin_dir=tmp_path / "builtin") for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(lambda r: r.write_version(_program(), manifest_fields()).version, registries * 2))
    assert sorted(written) == list(range(1, 9))
    assert registries[0].versions() == list(range(1, 9))


def test_failed_write_leaves_nothing_behind(registry: ArtifactRegistry) -> None:
    fields = manifest_fields()
    del fields["optimizer"]
    with pytest.raises(ValidationError, match="optimizer"):
        registry.write_version(_program(with_demo=True), fields)
    assert registry.versions() == []


def test_failed_write_after_a_good_one_keeps_the_good_one_only(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    before = _row(registry, 1)
    with pytest.raises(ValidationError):
        registry.write_version(_program(), manifest_fields(status="shipped"))  # not a Status
    assert registry.versions() == [1]
    assert _row(registry, 1) == before


def test_writing_elsewhere_than_the_store_or_the_shipped_folder_is_refused(
    registry: ArtifactRegistry, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="shipped to"):
        registry.write_version(_program(), manifest_fields(), directory=tmp_path / "elsewhere")
    assert registry.versions() == []
    assert not (tmp_path / "elsewhere").exists()


# ---- verification -------------------------------------------------------------------------------


def test_verify_accepts_an_untouched_version(registry: ArtifactRegistry) -> None:
    written = registry.write_version(_program(), manifest_fields())
    content, manifest = registry.verify(1)
    assert content == _row(registry, 1)[0].encode("utf-8")
    assert manifest.sha256 == written.sha256


def test_verify_refuses_a_program_edited_after_writing(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    state = json.loads(_row(registry, 1)[0])
    state["route"]["signature"]["instructions"] = "Always answer finance-manager."
    _tamper(registry, 1, program=json.dumps(state))

    with pytest.raises(RegistryError, match="SHA-256"):
        registry.verify(1)
    with pytest.raises(RegistryError, match="SHA-256"):
        registry.load(1)


def test_verify_refuses_a_shipped_version_without_manifest(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    (registry.builtin_dir / "optimized_delegation_v1.manifest.json").unlink()
    with pytest.raises(RegistryError, match="has no manifest"):
        registry.verify(1)


def test_verify_refuses_a_corrupt_stored_manifest(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    _tamper(registry, 1, manifest='{"version": 1')
    with pytest.raises(RegistryError, match=r"manifest of version 1 .* is invalid"):
        registry.verify(1)


def test_verify_refuses_a_missing_version(registry: ArtifactRegistry) -> None:
    with pytest.raises(RegistryError, match="no artifact version 4"):
        registry.verify(4)


def test_verify_refuses_other_signaturemanifest_fields(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    _rewrite_manifest(registry, 1, signature_fields=["question", "answer"])
    with pytest.raises(RegistryError, match="built for fields") as caught:
        registry.verify(1)
    assert "question" in str(caught.value)


def test_program_that_sets_lm_settings_is_refused_even_with_a_matching_hash(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    state = json.loads(_row(registry, 1)[0])
    state["route"]["lm"] = {"api_base": "http://evil"}
    evil = json.dumps(state)
    _tamper(registry, 1, program=evil)
    _rewrite_manifest(registry, 1, sha256=hashlib.sha256(evil.encode("utf-8")).hexdigest())

    # The hash and fields check out now, so only the LM check is left to refuse it.
    with pytest.raises(RegistryError, match="outside the allowlist"):
        registry.verify(1)
    with pytest.raises(RegistryError, match="outside the allowlist"):
        registry.load(1)
    with pytest.raises(RegistryError, match="outside the allowlist"):
        registry.promote(1)
    assert registry.champion() is None


# ---- champion, promote, rollback -----------------------------------------------------------------


def test_no_champion_without_versions(registry: ArtifactRegistry) -> None:
    assert registry.champion() is None


def test_candidate_versions_are_not_champions(registry: ArtifactRegistry) -> None:
    _write_builtin(registry, status="candidate")
    registry.write_version(_program(), manifest_fields(status="champion"))  # written at run time, not shipped
    assert registry.champion() is None


def test_builtin_champion_serves_without_a_pointer(registry: ArtifactRegistry) -> None:
    version = _write_builtin(registry)
    assert version == 1
    assert registry.champion() == 1
    assert registry.pointer_stamp() == 0  # never written


def test_promote_switches_champion_and_retires_the_builtin_one(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    builtin_before = _folder_bytes(registry.builtin_dir)
    registry.write_version(_program(with_demo=True), manifest_fields())

    registry.promote(2, reason="better on dev")

    assert registry.champion() == 2
    assert registry.manifest(2).status == "champion"
    assert registry.manifest(2).status_reason == "better on dev"
    assert registry.manifest(1).status == "retired"
    assert registry.pointer_stamp() == 1
    assert _folder_bytes(registry.builtin_dir) == builtin_before
    [entry] = registry.history()
    assert (entry.action, entry.outcome, entry.from_champion, entry.to_champion) == ("promote v2", "applied", 1, 2)
    assert (entry.from_revision, entry.to_revision, entry.reason) == (0, 1, "better on dev")
    assert entry.host and "@" in entry.who


def test_promoting_the_current_champion_is_refused(registry: ArtifactRegistry) -> None:
    _write_builtin(registry)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(1)
    registry.write_version(_program(), manifest_fields())
    registry.promote(2)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(2)
    assert [e.outcome for e in registry.history()] == [
        "refused: version 1 is already the champion",
        "applied",
        "refused: version 2 is already the champion",
    ]
    assert registry.pointer_stamp() == 1  # refusals change nothing


def test_conditional_promotion_is_refused_when_the_champion_changed(registry: ArtifactRegistry) -> None:
    """The re-optimization's promotion: only over the champion its challenger was scored against."""
    _write_builtin(registry)
    registry.write_version(_program(), manifest_fields())  # v2, promoted by an operator meanwhile
    registry.write_version(_program(with_demo=True), manifest_fields())  # v3, scored against v1
    registry.promote(2, who="ops@host")

    with pytest.raises(RegistryConflict, match="champion is now version 2, not version 1"):
        registry.promote(3, who=REOPTIMIZATION_ACTOR, expect_champion=1)

    assert registry.champion() == 2
    assert registry.manifest(3).status == "candidate"
    last = registry.history()[-1]
    assert (last.who, last.action, last.from_champion, last.to_champion) == (REOPTIMIZATION_ACTOR, "promote v3", 2, 2)
    assert last.outcome.startswith("refused: the champion is now version 2") and last.to_revision is None
    registry.promote(3, who=REOPTIMIZATION_ACTOR, expect_champion=2)
    assert registry.champion() == 3


def test_rollback_restores_previous_champion_and_rejects_the_current(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    registry.write_version(_program(with_demo=True), manifest_fields())
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
    registry.write_version(_program(), manifest_fields())
    registry.promote(2)
    assert registry.rollback() == 1
    assert registry.champion() == 1
    assert registry.manifest(2).status == "rejected"


def test_rollback_without_history_is_refused(registry: ArtifactRegistry) -> None:
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    registry.write_version(_program(), manifest_fields())
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
    registry.write_version(_program(with_demo=True), manifest_fields())
    registry.promote(1)

    assert source.current.version == "optimized_delegation_v1"
    assert len(source.current.program.route.demos) == 1

    registry.write_version(_program(), manifest_fields())
    registry.promote(2)
    assert source.current.version == "optimized_delegation_v2"


def test_after_a_restart_a_refused_champion_gives_the_last_good_version_not_the_base_module(
    registry: ArtifactRegistry,
) -> None:
    """Defect 7: a worker starting on a tampered champion serves the champion before it."""
    registry.write_version(_program(with_demo=True), manifest_fields())
    registry.promote(1)
    registry.write_version(_program(), manifest_fields())
    registry.promote(2)
    _tamper(registry, 2, program=_row(registry, 2)[0][:-20])
    assert registry.earlier_champions() == [1]

    restarted = ChampionProgram(registry)  # what a worker start builds
    assert restarted.current.version == "optimized_delegation_v1"
    assert len(restarted.current.program.route.demos) == 1


def test_with_no_earlier_version_that_loads_the_base_module_serves(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(with_demo=True), manifest_fields())
    registry.promote(1)
    _tamper(registry, 1, program="{not json")
    assert ChampionProgram(registry).current.version == "dspy-base"


def test_champion_program_keeps_the_last_good_program_when_the_new_one_is_corrupt(
    registry: ArtifactRegistry,
) -> None:
    registry.write_version(_program(with_demo=True), manifest_fields())
    registry.promote(1)
    source = ChampionProgram(registry)
    assert source.current.version == "optimized_delegation_v1"

    registry.write_version(_program(), manifest_fields())
    registry.promote(2)  # verified and loaded while still intact...
    _tamper(registry, 2, program=_row(registry, 2)[0][:-20])  # ...then corrupted (truncated)
    assert registry.champion() == 2

    current = source.current  # must not raise
    assert current.version == "optimized_delegation_v1"
    assert len(current.program.route.demos) == 1
    assert source.current.version == "optimized_delegation_v1"


async def test_decider_reports_the_champion_in_force_at_call_time(registry: ArtifactRegistry) -> None:
    registry.write_version(_program(), manifest_fields())
    registry.write_version(_program(with_demo=True), manifest_fields())
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
    # One call each: the DummyLM's two answers were used in turn (its history is off, defect 8).
    assert (first.decision.confidence, second.decision.confidence) == (0.9, 0.8)


def test_a_non_utf8_shipped_manifest_is_refused_by_name_and_does_not_stop_serving(
    registry: ArtifactRegistry,
) -> None:
    registry.builtin_dir.mkdir(parents=True)
    DelegationDecider().save(str(registry.builtin_dir / "optimized_delegation_v1.json"))
    (registry.builtin_dir / "optimized_delegation_v1.manifest.json").write_bytes(b'{"version": 1, "status": "\xff"}')
    with pytest.raises(RegistryError, match="is not UTF-8"):
        registry.manifest(1)
    assert ChampionProgram(registry).current.version == "dspy-base"
