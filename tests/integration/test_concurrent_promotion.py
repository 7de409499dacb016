"""An operator's ``artifacts promote`` and the re-optimization's promotion at the same moment, on one PostgreSQL.

Both are real processes. The test holds the pointer row's lock until PostgreSQL shows both
changers waiting on it, then lets go, so the two really contend; whichever order the server
grants them, there is exactly one champion and the audit trail holds both attempts, each
decided on what the other left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from delegation.learning.registry import REOPTIMIZATION_ACTOR, ArtifactRegistry
from delegation.store.database import PostgresDatabase


def _env(url: str, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "LLM_", "DSPY_"))}
    env.update(
        DATABASE_URL=url, DATA_DIR=str(data), LOG_DIR=str(data), PYTHONPATH=str(Path(__file__).resolve().parents[2])
    )
    return env


def _candidate(registry: ArtifactRegistry, reason: str) -> int:
    """A new candidate version: the shipped champion's program under a new number."""
    champion = registry.champion()
    assert champion is not None
    fields = registry.manifest(champion).model_dump(exclude={"version", "sha256", "created_at"})
    fields.update(status="candidate", status_reason=reason, parent_version=champion)
    return registry.write_version(registry.load(champion).program, fields).version


def _waiting_on_the_pointer(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        ("%artifact_pointer%FOR UPDATE%",),
    ).fetchone()
    return int(row[0]) if row else 0


def test_operator_promotion_and_reoptimization_promotion_leave_one_champion(
    shared_database_url: str, tmp_path: Path
) -> None:
    registry = ArtifactRegistry(PostgresDatabase(shared_database_url))
    shipped = registry.champion()
    operators = _candidate(registry, "the operator's pick")
    challenger = _candidate(registry, "the re-optimization's challenger, scored against the shipped champion")
    env = _env(shared_database_url, tmp_path / "data")

    with psycopg.connect(shared_database_url) as holder, psycopg.connect(shared_database_url, autocommit=True) as probe:
        # The row exists (committed) before the lock, so both changers get past their insert and wait on the lock.
        probe.execute(
            "INSERT INTO artifact_pointer (name, revision, state_json, updated_at, updated_by)"
            " VALUES ('champion', 0, '{}', now()::text, 'test') ON CONFLICT (name) DO NOTHING"
        )
        holder.execute("SELECT revision FROM artifact_pointer WHERE name = 'champion' FOR UPDATE")
        cli = subprocess.Popen(
            [sys.executable, "-m", "delegation.cli.main", "artifacts", "promote", str(operators), "--reason", "ops"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        reopt = subprocess.Popen(
            [sys.executable, "-m", "tests.support.promote_challenger", str(challenger), str(shipped)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while _waiting_on_the_pointer(probe) < 2:
            for process in (cli, reopt):
                assert process.poll() is None, f"a changer ended before the lock was released: {process.stdout.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the two changers never both waited on the pointer"
            time.sleep(0.05)
        holder.rollback()  # let them go: the server grants the lock to one, then the other
        cli_out, _ = cli.communicate(timeout=120)
        reopt_out, _ = reopt.communicate(timeout=120)

    assert cli.returncode == 0, cli_out
    assert reopt.returncode == 0, reopt_out
    promotion = json.loads(reopt_out.strip().splitlines()[-1])

    champions = [v for v in registry.versions() if registry.manifest(v).status == "champion"]
    assert champions == [registry.champion()] == [operators]  # the operator's promotion is unconditional
    attempts = [e for e in registry.history() if e.action.startswith("promote")]
    assert sorted((e.action, e.who == REOPTIMIZATION_ACTOR) for e in attempts) == [
        (f"promote v{operators}", False),
        (f"promote v{challenger}", True),
    ]
    by_actor = {e.who == REOPTIMIZATION_ACTOR: e for e in attempts}
    if by_actor[True].outcome == "applied":  # the re-optimization went first, the operator replaced it
        assert promotion["promoted"] is True
        assert registry.manifest(challenger).status == "retired"
        assert (by_actor[True].from_champion, by_actor[True].to_champion) == (shipped, challenger)
        assert (by_actor[False].from_champion, by_actor[False].to_champion) == (challenger, operators)
    else:  # the operator went first: the challenger was scored against a champion that is gone
        assert by_actor[True].outcome == f"refused: the champion is now version {operators}, not version {shipped} " + (
            f"that version {challenger} was compared with"
        )
        assert promotion["promoted"] is False and registry.manifest(challenger).status == "rejected"
        assert (by_actor[False].from_champion, by_actor[False].to_champion) == (shipped, operators)
    # No lost update: every applied change starts from the revision the one before it left.
    applied = [e for e in registry.history() if e.outcome == "applied"]
    assert [e.from_revision for e in applied] == list(range(len(applied)))
    assert [e.to_revision for e in applied] == list(range(1, len(applied) + 1))
    assert registry.pointer_stamp() == len(applied)
