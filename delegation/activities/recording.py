"""Persists decision records: the SQLite store and the TRAINING_DATA log."""

from __future__ import annotations

import asyncio

from loguru import logger
from temporalio import activity

from delegation.core import names
from delegation.core.activity_io import RecordInput, RecordResult
from delegation.store.decisions import DecisionStore


class RecordActivities:
    """Idempotent recording: a retried attempt never writes a second row or log line."""

    def __init__(self, store: DecisionStore) -> None:
        self._store = store

    @activity.defn(name=names.RECORD_DECISION)
    async def record_decision(self, data: RecordInput) -> RecordResult:
        """Store the record (keyed by workflow and run id) and log it once when logging is on."""
        stored, logged = await asyncio.to_thread(self._store.record, data.record, log_to_file=data.log_to_file)
        if not stored:
            logger.info("decision for {} was already recorded; nothing written", data.record.workflow_id)
        return RecordResult(stored=stored, logged=logged)
