"""Where decisions go: a row per workflow run in the store's database, and one TRAINING_DATA JSON line per decision.

Activities run at least once, so ``record`` is idempotent: the row is keyed by
(workflow_id, run_id). The log line is claimed in the row's transaction (one of concurrent
attempts wins), written whole and fsynced after the commit, then marked written. The row is
exactly-once; the log line is at-least-once (a crash between the append and the mark
repeats it on retry), so readers of the log dedupe by (workflow_id, run_id):
``read_training_log`` does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict

from delegation.core.models import DecisionRecord, DelegationFeedback, FeedbackReceipt, Variant
from delegation.store.database import Database, SQLiteDatabase, iso_utc
from delegation.store.files import append_line
from delegation.store.schema import MIGRATIONS

TRAINING_DATA_MARKER = "TRAINING_DATA"

# The row's ``logged`` column: 0 not logged, 2 claimed by an attempt that is writing the line, 1 written.
_LOG_WRITTEN = 1
_LOG_CLAIMED = 2
# A retry comes no sooner than a few seconds after its attempt died (Temporal's timeouts);
# writing one line takes milliseconds.
STALE_LOG_CLAIM = timedelta(seconds=3)

# One decision per task in what is counted (report, guardrail, training): when a task was
# decided more than once (a client that re-ran its workflow id), only its latest run, the
# one feedback attaches to.
_LATEST_RUN_ONLY = (
    "d.decided_at = (SELECT MAX(latest.decided_at) FROM decisions latest WHERE latest.workflow_id = d.workflow_id)"
)


class UnknownDecision(LookupError):
    """Feedback names a decision the store has never recorded."""


class InvalidFeedback(ValueError):
    """Feedback does not fit the decision it names (e.g. a correct assignee outside its candidates)."""


class StoredFeedback(BaseModel):
    """Feedback as stored next to its decision, with when it (last) arrived."""

    model_config = ConfigDict(frozen=True)

    feedback: DelegationFeedback
    received_at: AwareDatetime


class StoredDecision(BaseModel):
    """A decision record and the feedback on it, if any."""

    model_config = ConfigDict(frozen=True)

    record: DecisionRecord
    feedback: StoredFeedback | None = None


def training_log_line(record: DecisionRecord) -> str:
    """One JSON line with the TRAINING_DATA marker."""
    payload = {"marker": TRAINING_DATA_MARKER, **record.model_dump(mode="json")}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def read_training_log(path: Path) -> tuple[list[DecisionRecord], int]:
    """The decisions in a TRAINING_DATA log, once each by (workflow_id, run_id), and how many lines were not records.

    The log is at-least-once (see the module), so a repeated line is dropped here; a line that
    is not a record (a torn write at a crash, foreign text) is counted, never fatal.
    """
    records: dict[tuple[str, str], DecisionRecord] = {}
    unreadable = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                payload = json.loads(line)
                if payload.pop("marker", None) != TRAINING_DATA_MARKER:
                    raise ValueError("no TRAINING_DATA marker")
                record = DecisionRecord.model_validate(payload)
            except ValueError:
                unreadable += 1
                continue
            records.setdefault((record.workflow_id, record.run_id), record)
    return list(records.values()), unreadable


class DecisionStore:
    """Decision records, feedback and re-optimization runs in one database, plus the training-data log.

    ``database`` is a ``Database`` (SQLite or PostgreSQL), or a path for a SQLite file. The log
    file is per host: with several workers each writes its own, and the database holds them all.
    """

    def __init__(self, database: Database | Path, log_path: Path) -> None:
        self.database: Database = SQLiteDatabase(database) if isinstance(database, Path) else database
        self.log_path = log_path
        self.database.migrate(MIGRATIONS)

    def record(self, record: DecisionRecord, *, log_to_file: bool) -> tuple[bool, bool]:
        """Store the record and log it once. Returns (stored now, logged now); (False, False) on a repeat."""
        decision = record.decision
        with self.database.transaction() as tx:
            inserted = tx.execute(
                "INSERT INTO decisions (workflow_id, run_id, task_id, variant, assigned_variant,"
                " assignee_id, confidence, program_version, model, latency_ms, fallback_used, error, bucket,"
                " rollout_percentage, decided_at, record_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (workflow_id, run_id) DO NOTHING",
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
                    iso_utc(record.decided_at),
                    record.model_dump_json(),
                ),
            )
            stored = inserted == 1
            if not log_to_file:
                return stored, False
            # Claim the line: of concurrent attempts exactly one moves the row from "not logged".
            now = datetime.now(UTC)
            claimed = tx.execute(
                f"UPDATE decisions SET logged = {_LOG_CLAIMED}, log_claimed_at = ?"
                " WHERE workflow_id = ? AND run_id = ? AND logged = 0",
                (iso_utc(now), record.workflow_id, record.run_id),
            )
            if claimed != 1:
                row = tx.fetchone(
                    "SELECT logged, log_claimed_at FROM decisions WHERE workflow_id = ? AND run_id = ?",
                    (record.workflow_id, record.run_id),
                )
                if row is None or int(row[0]) != _LOG_CLAIMED:
                    return stored, False
                # Claimed but never marked. Recently: another attempt is writing it now. Long
                # ago: that attempt died, maybe after its append; write it (again): a repeated
                # line is what at-least-once allows, a lost one is not.
                claimed_at = datetime.fromisoformat(row[1]) if row[1] else None
                if claimed_at is not None and now - claimed_at < STALE_LOG_CLAIM:
                    return stored, False
                tx.execute(
                    "UPDATE decisions SET log_claimed_at = ? WHERE workflow_id = ? AND run_id = ?",
                    (iso_utc(now), record.workflow_id, record.run_id),
                )
        # After the claim's commit: a failed commit never leaves a line behind.
        try:
            append_line(self.log_path, training_log_line(record))
        except BaseException:
            # A write that failed (a full disk) gives the claim back, so the retry writes the line.
            with self.database.transaction() as tx:
                tx.execute(
                    "UPDATE decisions SET logged = 0 WHERE workflow_id = ? AND run_id = ?",
                    (record.workflow_id, record.run_id),
                )
            raise
        with self.database.transaction() as tx:
            tx.execute(
                f"UPDATE decisions SET logged = {_LOG_WRITTEN} WHERE workflow_id = ? AND run_id = ?",
                (record.workflow_id, record.run_id),
            )
        return stored, True

    def get(self, workflow_id: str) -> list[DecisionRecord]:
        """All records stored for a workflow id, oldest first."""
        with self.database.transaction() as tx:
            rows = tx.fetchall(
                "SELECT record_json FROM decisions WHERE workflow_id = ? ORDER BY decided_at", (workflow_id,)
            )
        return [DecisionRecord.model_validate_json(row[0]) for row in rows]

    # ---- feedback ---------------------------------------------------------------------------

    def record_feedback(self, feedback: DelegationFeedback, received_at: datetime) -> FeedbackReceipt:
        """Store feedback on the latest run of the decision it names; the same feedback twice changes nothing.

        Raises ``UnknownDecision`` when no decision was recorded under that id and
        ``InvalidFeedback`` when the correct assignee is not one of that request's candidates.
        """
        from delegation.core.team import candidates_for

        workflow_id = feedback.decision_workflow_id
        with self.database.transaction() as tx:
            row = tx.fetchone(
                "SELECT run_id, record_json FROM decisions WHERE workflow_id = ? ORDER BY decided_at DESC LIMIT 1",
                (workflow_id,),
            )
            if row is None:
                raise UnknownDecision(f"no decision is recorded for {_named(feedback)}")
            run_id, record_json = row
            record = DecisionRecord.model_validate_json(record_json)
            if feedback.task_id is not None and record.task_id != feedback.task_id:
                raise UnknownDecision(f"no decision is recorded for {_named(feedback)}")
            candidate_ids = [c.id for c in candidates_for(record.request)]
            if feedback.correct_assignee_id is not None and feedback.correct_assignee_id not in candidate_ids:
                raise InvalidFeedback(
                    f"correct_assignee_id {feedback.correct_assignee_id!r} is not a candidate of task "
                    f"{record.task_id}; its candidates are {candidate_ids}"
                )
            if (
                feedback.outcome == "reassigned"
                and record.decision is not None
                and record.decision.assignee_id == feedback.correct_assignee_id
            ):
                raise InvalidFeedback(
                    f"task {record.task_id} was already given to {feedback.correct_assignee_id}: "
                    "report it as accepted, or name the assignee it was reassigned to"
                )
            # Stored under the decision's own ids, so a feedback by task id and one by workflow id match.
            canonical = feedback.model_copy(update={"task_id": record.task_id, "workflow_id": None})
            payload = canonical.model_dump_json()
            existing = tx.fetchone(
                "SELECT feedback_json FROM feedback WHERE workflow_id = ? AND run_id = ?", (workflow_id, run_id)
            )
            if existing is not None and existing[0] == payload:
                result = "unchanged"
            else:
                tx.execute(
                    "INSERT INTO feedback (workflow_id, run_id, outcome, correct_assignee_id, comment,"
                    " received_at, feedback_json) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT (workflow_id, run_id) DO UPDATE SET outcome = excluded.outcome,"
                    " correct_assignee_id = excluded.correct_assignee_id, comment = excluded.comment,"
                    " received_at = excluded.received_at, feedback_json = excluded.feedback_json",
                    (
                        workflow_id,
                        run_id,
                        feedback.outcome,
                        feedback.correct_assignee_id,
                        feedback.comment,
                        iso_utc(received_at),
                        payload,
                    ),
                )
                result = "stored" if existing is None else "updated"
        return FeedbackReceipt(
            workflow_id=workflow_id,
            run_id=run_id,
            task_id=record.task_id,
            outcome=feedback.outcome,
            correct_assignee_id=feedback.correct_assignee_id,
            result=result,
            decided_assignee_id=record.decision.assignee_id if record.decision else None,
            variant=record.variant,
        )

    def decisions(self, *, since: datetime | None = None, until: datetime | None = None) -> list[StoredDecision]:
        """Decisions made in ``(since, until]``, oldest first, each with its feedback."""
        return self._select("d.decided_at", since, until)

    def decisions_with_feedback(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[StoredDecision]:
        """Decisions whose feedback arrived (or last changed) in ``(since, until]``, in arrival order."""
        return self._select("f.received_at", since, until, require_feedback=True)

    def _select(
        self, column: str, since: datetime | None, until: datetime | None, *, require_feedback: bool = False
    ) -> list[StoredDecision]:
        clauses, params = [_LATEST_RUN_ONLY], []
        if require_feedback:
            clauses.append("f.workflow_id IS NOT NULL")
        if since is not None:
            clauses.append(f"{column} > ?")
            params.append(iso_utc(since))
        if until is not None:
            clauses.append(f"{column} <= ?")
            params.append(iso_utc(until))
        where = f"WHERE {' AND '.join(clauses)}"
        query = (
            "SELECT d.record_json, f.feedback_json, f.received_at FROM decisions d LEFT JOIN feedback f"
            f" ON f.workflow_id = d.workflow_id AND f.run_id = d.run_id {where} ORDER BY {column}"
        )
        with self.database.transaction() as tx:
            rows = tx.fetchall(query, params)
        return [
            StoredDecision(
                record=DecisionRecord.model_validate_json(record_json),
                feedback=None
                if feedback_json is None
                else StoredFeedback(
                    feedback=DelegationFeedback.model_validate_json(feedback_json),
                    received_at=datetime.fromisoformat(received_at),
                ),
            )
            for record_json, feedback_json, received_at in rows
        ]

    def recent_decisions(
        self, limit: int, *, assigned_variant: Variant | None = None, since: datetime | None = None
    ) -> list[DecisionRecord]:
        """The last ``limit`` decisions (newest first), optionally of one assigned arm and after ``since``.

        Either arm for the live split; ``assigned_variant="dspy"`` for the guardrail.
        """
        clauses: list[str] = [_LATEST_RUN_ONLY]
        params: list[str] = []
        if assigned_variant is not None:
            clauses.append("d.assigned_variant = ?")
            params.append(assigned_variant)
        if since is not None:
            clauses.append("d.decided_at > ?")
            params.append(iso_utc(since))
        where = f"WHERE {' AND '.join(clauses)}"
        with self.database.transaction() as tx:
            rows = tx.fetchall(
                f"SELECT d.record_json FROM decisions d {where} ORDER BY d.decided_at DESC LIMIT ?", (*params, limit)
            )
        return [DecisionRecord.model_validate_json(row[0]) for row in rows]

    # ---- re-optimization runs ---------------------------------------------------------------

    def last_collected_until(self) -> datetime | None:
        """Where the last finished re-optimization stopped collecting feedback."""
        with self.database.transaction() as tx:
            row = tx.fetchone("SELECT MAX(collected_until) FROM reoptimization_runs")
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def record_reoptimization(
        self, run_key: str, collected_until: datetime, report_json: str, finished_at: datetime
    ) -> bool:
        """Remember a finished run (idempotent by ``run_key``). Returns True when stored now."""
        with self.database.transaction() as tx:
            inserted = tx.execute(
                "INSERT INTO reoptimization_runs (run_key, collected_until, finished_at, report_json)"
                " VALUES (?,?,?,?) ON CONFLICT (run_key) DO NOTHING",
                (run_key, iso_utc(collected_until), iso_utc(finished_at), report_json),
            )
        return inserted == 1


def _named(feedback: DelegationFeedback) -> str:
    return f"task {feedback.task_id}" if feedback.task_id is not None else f"workflow {feedback.workflow_id}"
