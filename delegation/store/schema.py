"""The store's schema history: every migration, in order. Append new steps; never edit an applied one."""

from __future__ import annotations

from delegation.store.database import Migration

# Version 1 is the schema the SQLite store had before migrations were tracked; ``IF NOT EXISTS``
# lets an existing store adopt it with its data.
DECISIONS_V1 = """
CREATE TABLE IF NOT EXISTS decisions (
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    assigned_variant TEXT NOT NULL,
    assignee_id TEXT,
    confidence DOUBLE PRECISION,
    program_version TEXT NOT NULL,
    model TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
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
CREATE TABLE IF NOT EXISTS feedback (
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    correct_assignee_id TEXT,
    comment TEXT NOT NULL,
    received_at TEXT NOT NULL,
    feedback_json TEXT NOT NULL,
    PRIMARY KEY (workflow_id, run_id)
);
DROP INDEX IF EXISTS decisions_variant;
CREATE INDEX IF NOT EXISTS feedback_received_at ON feedback (received_at);
CREATE TABLE IF NOT EXISTS reoptimization_runs (
    run_key TEXT PRIMARY KEY,
    collected_until TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    report_json TEXT NOT NULL
)
"""

# The guardrail reads the newest DSPy-arm decisions; the report reads by time.
DECISIONS_V2 = """
CREATE INDEX IF NOT EXISTS decisions_arm_decided_at ON decisions (assigned_variant, decided_at)
"""

_FLAGS_COMMON = """
CREATE TABLE IF NOT EXISTS live_flags (
    environment TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    flags_json TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
"""
_AUDIT_COLUMNS = """
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    environment TEXT NOT NULL,
    outcome TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER,
    before_json TEXT NOT NULL,
    after_json TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flag_audit_environment ON flag_audit (environment, id)
"""
FLAGS_V3_SQLITE = (
    _FLAGS_COMMON + "CREATE TABLE IF NOT EXISTS flag_audit (id INTEGER PRIMARY KEY AUTOINCREMENT," + _AUDIT_COLUMNS
)
FLAGS_V3_POSTGRESQL = (
    _FLAGS_COMMON
    + "CREATE TABLE IF NOT EXISTS flag_audit (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    + _AUDIT_COLUMNS
)

# The artifact registry (run-time program versions, the champion pointer with a revision, its
# audit trail) and the training-set versions: small documents, so the rows hold them whole.
_ARTIFACTS_COMMON = """
CREATE TABLE IF NOT EXISTS artifact_versions (
    version INTEGER PRIMARY KEY,
    program_json TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifact_pointer (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    state_json TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS training_sets (
    version INTEGER PRIMARY KEY,
    manifest_json TEXT NOT NULL,
    examples_jsonl TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
_ARTIFACT_AUDIT_COLUMNS = """
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    from_champion INTEGER,
    to_champion INTEGER,
    from_revision INTEGER,
    to_revision INTEGER,
    reason TEXT NOT NULL
)
"""
ARTIFACTS_V4_SQLITE = (
    _ARTIFACTS_COMMON
    + "CREATE TABLE IF NOT EXISTS artifact_audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    + _ARTIFACT_AUDIT_COLUMNS
)
ARTIFACTS_V4_POSTGRESQL = (
    _ARTIFACTS_COMMON
    + "CREATE TABLE IF NOT EXISTS artifact_audit (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    + _ARTIFACT_AUDIT_COLUMNS
)

# When an attempt claimed a decision's log line: a claim older than a retry's delay is one
# whose attempt died, told apart from one whose attempt is writing right now.
LOG_CLAIM_V5 = "ALTER TABLE decisions ADD COLUMN log_claimed_at TEXT;"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "decisions, feedback, re-optimization runs", DECISIONS_V1),
    Migration(2, "index decisions by arm and time", DECISIONS_V2),
    Migration(3, "live flags with a version, and their audit trail", FLAGS_V3_SQLITE, postgresql=FLAGS_V3_POSTGRESQL),
    Migration(
        4,
        "artifact registry (versions, champion pointer, audit) and training-set versions",
        ARTIFACTS_V4_SQLITE,
        postgresql=ARTIFACTS_V4_POSTGRESQL,
    ),
    Migration(5, "when a decision's log line was claimed", LOG_CLAIM_V5),
)
