"""The database layer: migrations on both backends, upgrades with data kept, concurrent openers, clear errors."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from delegation.core.models import DelegationDecision, DelegationRequest
from delegation.store.database import (
    Database,
    DatabaseError,
    PostgresDatabase,
    SQLiteDatabase,
    open_database,
    redacted_url,
)
from delegation.store.decisions import DecisionStore
from delegation.store.schema import DECISIONS_V1, MIGRATIONS
from tests.support.factories import decision_record
from tests.support.loopback import free_port

ALL_VERSIONS = [m.version for m in MIGRATIONS]


def _record(workflow_id: str = "delegation-task-1", run_id: str = "run-1"):  # type: ignore[no-untyped-def]
    request = DelegationRequest(task_id=workflow_id.removeprefix("delegation-"), title="Renew the lease")
    return decision_record(
        request,
        workflow_id=workflow_id,
        run_id=run_id,
        decision=DelegationDecision(assignee_id="legal-counsel", confidence=0.7, reasoning="a lease"),
        decided_at=datetime.now(UTC),
    )


def test_a_fresh_database_gets_every_migration_once(database: Database, tmp_path: Path) -> None:
    assert database.migrate(MIGRATIONS) == ALL_VERSIONS
    assert database.applied_versions() == ALL_VERSIONS
    assert database.migrate(MIGRATIONS) == []
    DecisionStore(database, tmp_path / "d.log")  # a store on a migrated database applies nothing more
    assert database.applied_versions() == ALL_VERSIONS


def test_an_sqlite_store_from_before_migrations_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    record = _record()
    # The schema as the store created it before migrations were tracked (REAL columns, no table of versions).
    with sqlite3.connect(path) as conn:
        conn.executescript(DECISIONS_V1.replace("DOUBLE PRECISION", "REAL"))
        conn.execute(
            "INSERT INTO decisions (workflow_id, run_id, task_id, variant, assigned_variant, assignee_id, confidence,"
            " program_version, model, latency_ms, fallback_used, error, bucket, rollout_percentage, decided_at,"
            " record_json, logged) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1)",
            (
                record.workflow_id,
                record.run_id,
                record.task_id,
                record.variant,
                record.assigned_variant,
                "legal-counsel",
                0.7,
                record.program_version,
                record.model,
                record.latency_ms,
                0,
                None,
                record.bucket,
                record.rollout_percentage,
                record.decided_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
                record.model_dump_json(),
            ),
        )
    store = DecisionStore(path, tmp_path / "d.log")
    assert store.database.applied_versions() == ALL_VERSIONS
    assert store.get(record.workflow_id) == [record]
    assert store.record(record, log_to_file=True) == (False, False)  # already stored and logged before


def test_a_postgres_database_at_version_1_is_upgraded_with_its_rows(postgres_database: PostgresDatabase) -> None:
    assert postgres_database.migrate(MIGRATIONS[:1]) == [1]
    record = _record()
    first = DecisionStore.__new__(DecisionStore)  # a store as version 1 wrote: no later migrations
    first.database, first.log_path = postgres_database, Path("/nonexistent/unused.log")
    assert first.record(record, log_to_file=False) == (True, False)
    upgraded = DecisionStore(postgres_database, Path("/nonexistent/unused.log"))
    assert postgres_database.applied_versions() == ALL_VERSIONS
    assert upgraded.get(record.workflow_id) == [record]


def test_a_database_at_the_previous_schema_is_upgraded_with_its_flags_and_decisions(
    database: Database, tmp_path: Path
) -> None:
    """Version 3 (flags in the store, no registry tables) to the current one: every row kept, the registry added."""
    from delegation.learning.registry import ArtifactRegistry
    from delegation.store.flags import FlagStore

    previous = [m for m in MIGRATIONS if m.version <= 3]
    assert database.migrate(previous) == [1, 2, 3]
    record = _record()
    with database.transaction() as tx:
        tx.execute(
            "INSERT INTO live_flags (environment, version, flags_json, updated_at, updated_by) VALUES (?,?,?,?,?)",
            ("test", 7, '{"DSPY_ROLLOUT_PERCENTAGE": 25}', "2026-11-30T10:00:00.000000+00:00", "ops@old"),
        )
    old_store = DecisionStore.__new__(DecisionStore)  # a store as version 3 wrote
    old_store.database, old_store.log_path = database, tmp_path / "d.log"
    assert old_store.record(record, log_to_file=False) == (True, False)

    registry = ArtifactRegistry(database, builtin_dir=tmp_path / "no-builtin")  # applies version 4
    assert database.applied_versions() == ALL_VERSIONS
    live = FlagStore(database, "test").read()
    assert live is not None and (live.version, live.values, live.updated_by) == (
        7,
        {"DSPY_ROLLOUT_PERCENTAGE": 25},
        "ops@old",
    )
    assert DecisionStore(database, tmp_path / "d.log").get(record.workflow_id) == [record]
    assert registry.versions() == [] and registry.champion() is None and registry.pointer_stamp() == 0


def test_workers_starting_together_apply_each_migration_once(
    postgres_server_url: str, postgres_database: PostgresDatabase
) -> None:
    schema = postgres_database.schema
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start_worker() -> None:
        db = PostgresDatabase(postgres_server_url, schema=schema)
        try:
            barrier.wait()
            applied.append(db.migrate(MIGRATIONS))
        except BaseException as err:  # reported below, with the others
            errors.append(err)
        finally:
            db.close()

    threads = [threading.Thread(target=start_worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied, key=len) == [[], [], [], ALL_VERSIONS]


def test_two_hosts_recording_one_decision_store_one_row_and_log_it_once(
    postgres_server_url: str, postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    other = PostgresDatabase(postgres_server_url, schema=postgres_database.schema)
    try:
        hosts = [
            DecisionStore(postgres_database, tmp_path / "host-a.log"),
            DecisionStore(other, tmp_path / "host-b.log"),
        ]
        record = _record("delegation-task-race")
        barrier = threading.Barrier(2)
        results: list[tuple[bool, bool]] = []

        def write(store: DecisionStore) -> None:
            barrier.wait()
            results.append(store.record(record, log_to_file=True))

        threads = [threading.Thread(target=write, args=(s,)) for s in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [(False, False), (True, True)]
        lines = [p.read_text().splitlines() for p in (tmp_path / "host-a.log", tmp_path / "host-b.log") if p.exists()]
        assert sum(len(x) for x in lines) == 1
        assert hosts[1].get(record.workflow_id) == [record]
    finally:
        other.close()


def test_a_url_that_is_not_postgres_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="must start with postgresql://"):
        open_database("mysql://u:secret@db/x", tmp_path / "x.sqlite3")


def test_no_url_is_the_sqlite_file(tmp_path: Path) -> None:
    db = open_database(None, tmp_path / "here.sqlite3")
    assert isinstance(db, SQLiteDatabase) and db.path == tmp_path / "here.sqlite3"


def test_an_unreachable_server_fails_fast_without_its_password() -> None:
    url = f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/app"
    with pytest.raises(DatabaseError) as caught:
        PostgresDatabase(url, timeout_s=2)
    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "app:***@127.0.0.1" in message
    assert redacted_url(url) in message


def test_an_sqlite_file_that_is_not_a_database_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite3"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(DatabaseError, match=r"broken\.sqlite3"):
        DecisionStore(path, tmp_path / "d.log")
