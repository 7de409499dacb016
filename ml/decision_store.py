"""Where decisions go: a SQLite row per workflow run, and one TRAINING_DATA JSON line per decision.

Activities run at least once, so ``record`` is idempotent: the row is keyed by
(workflow_id, run_id) and the log line is written only while the row says it has not been.
The row is exactly-once; the log line is at-least-once (a crash between the append and the
commit repeats it on retry), so readers of the log dedupe by (workflow_id, run_id).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

from core.models import DecisionRecord

TRAINING_DATA_MARKER = "TRAINING_DATA"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    assigned_variant TEXT NOT NULL,
    assignee_id TEXT,
    confidence REAL,
    program_version TEXT NOT NULL,
    model TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    fallback_used INTEGER NOT NULL,
    error TEXT,
    bucket INTEGER NOT NULL,
    rollout_percentage INTEGER NOT NULL,
    decided_at TEXT NOT NULL,
    record_json TEXT NOT NULL,
    logged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, run_id)
);
CREATE INDEX IF NOT EXISTS decisions_decided_at ON decisions (decided_at);
CREATE INDEX IF NOT EXISTS decisions_variant ON decisions (variant);
"""


def training_log_line(record: DecisionRecord) -> str:
    """One JSON line with the TRAINING_DATA marker."""
    payload = {"marker": TRAINING_DATA_MARKER, **record.model_dump(mode="json")}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class DecisionStore:
    """SQLite decision store plus the append-only training-data log."""

    def __init__(self, db_path: Path, log_path: Path) -> None:
        self.db_path = db_path
        self.log_path = log_path
        self._lock = threading.Lock()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash; only an OS crash can drop the last commits,
            # and the decision stays in the workflow's history either way.
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    def record(self, record: DecisionRecord, *, log_to_file: bool) -> tuple[bool, bool]:
        """Store the record and log it once. Returns (stored now, logged now); (False, False) on a repeat."""
        decision = record.decision
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO decisions (workflow_id, run_id, task_id, variant, assigned_variant,"
                    " assignee_id, confidence, program_version, model, latency_ms, fallback_used, error, bucket,"
                    " rollout_percentage, decided_at, record_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        record.workflow_id,
                        record.run_id,
                        record.task_id,
                        record.variant,
                        record.assigned_variant,
                        decision.assignee_id if decision else None,
                        decision.confidence if decision else None,
                        record.program_version,
                        record.model,
                        record.latency_ms,
                        int(record.fallback_used),
                        record.error,
                        record.bucket,
                        record.rollout_percentage,
                        record.decided_at.astimezone(UTC).isoformat(),
                        record.model_dump_json(),
                    ),
                )
                stored = cursor.rowcount == 1
                logged = False
                if log_to_file:
                    (already,) = conn.execute(
                        "SELECT logged FROM decisions WHERE workflow_id = ? AND run_id = ?",
                        (record.workflow_id, record.run_id),
                    ).fetchone()
                    if not already:
                        self._append_log_line(training_log_line(record))
                        conn.execute(
                            "UPDATE decisions SET logged = 1 WHERE workflow_id = ? AND run_id = ?",
                            (record.workflow_id, record.run_id),
                        )
                        logged = True
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return stored, logged

    def _append_log_line(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of a whole line in append mode: concurrent writers never interleave lines.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def get(self, workflow_id: str) -> list[DecisionRecord]:
        """All records stored for a workflow id, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT record_json FROM decisions WHERE workflow_id = ? ORDER BY decided_at", (workflow_id,)
            ).fetchall()
        return [DecisionRecord.model_validate_json(row[0]) for row in rows]

    def count(self, workflow_id: str | None = None) -> int:
        """How many records are stored (for one workflow id, or in all)."""
        with self._connect() as conn:
            if workflow_id is None:
                (n,) = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()
            else:
                (n,) = conn.execute("SELECT COUNT(*) FROM decisions WHERE workflow_id = ?", (workflow_id,)).fetchone()
        return int(n)
