"""Flags that cannot be read, seen by a real worker: Instructor decides, the record carries the flags error.

Corrupt live rows in the worker's own SQLite store, a non-UTF-8 flags file at start, and a
PostgreSQL store whose flags table is locked by another session (a real stall).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

import psycopg
import pytest

from delegation.rollout.flags import FeatureFlagProvider
from delegation.store.database import PostgresDatabase
from delegation.store.flags import FlagStore
from tests.faults.conftest import FaultStack
from tests.support.flags import set_flags
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer


def _answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return routing_answer("legal-counsel", 0.9)


def _corrupt_live_row(stack: FaultStack, flags_json: str) -> None:
    with sqlite3.connect(stack.db_path) as conn:
        changed = conn.execute("UPDATE live_flags SET flags_json = ? WHERE environment = 'test'", (flags_json,))
        assert changed.rowcount == 1


@pytest.mark.parametrize(
    ("flags_json", "named"),
    [
        ('{"USE_DSPY_DELEGATION": true, "DSPY_ROLLOUT_PERCENTAGE": 10', "not valid JSON"),
        ('{"USE_DSPY_DELEGATION": true, "DSPY_ROLLOUT_PERCENTAGE": 150}', "DSPY_ROLLOUT_PERCENTAGE"),
        ('{"USE_DSPY_DELEGATION": "\ufffd\ufffd", "DSPY_ROLLOUT_PERCENTAGE": 10}', "USE_DSPY_DELEGATION"),
    ],
    ids=["truncated-json", "out-of-range", "mangled-text"],
)
async def test_a_corrupt_live_row_gives_instructor_and_the_error_on_the_record(
    fault_stack_factory: Any, flags_json: str, named: str
) -> None:
    with ScriptedOpenAI(_answer) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url)
        with stack.worker:
            stack.set_flags({"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100})
            on = await (await stack.start(stack.request("flags-good"))).result()
            assert on.variant == "dspy" and on.flags_error is None
            _corrupt_live_row(stack, flags_json)
            request = stack.request("flags-bad")
            record = await (await stack.start(request)).result()

    assert record.assigned_variant == record.variant == "instructor"
    assert record.decision is not None and record.rollout_percentage == 0
    assert record.flags_error is not None and named in record.flags_error
    [stored] = stack.rows(request.workflow_id)
    assert stored.flags_error == record.flags_error, "the flags error is on the stored record too"
    assert "feature flags rejected" in stack.worker.output()


async def test_a_non_utf8_flags_file_does_not_stop_the_worker(fault_stack_factory: Any) -> None:
    with ScriptedOpenAI(_answer) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url)
        flags_file = stack.folder / "data" / "feature_flags.test.json"
        flags_file.parent.mkdir(parents=True)
        flags_file.write_bytes(b'{"USE_DSPY_DELEGATION": true, "DSPY_ROLLOUT_PERCENTAGE": "\xff\xfe"}')
        with stack.worker:
            record = await (await stack.start(stack.request("bad-file"))).result()
    assert record.variant == "instructor" and record.decision is not None
    output = stack.worker.output()
    assert f"flags file {flags_file} is not UTF-8" in output, output[-2000:]


async def test_a_stalled_flags_table_gives_instructor_within_the_step(
    fault_stack_factory: Any, shared_database_url: str
) -> None:
    """Another session holds an exclusive lock on the flags table: the read waits, the step does not."""
    with ScriptedOpenAI(_answer) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url, DATABASE_URL=shared_database_url)
        with stack.worker:
            database = PostgresDatabase(shared_database_url)
            try:
                provider = FeatureFlagProvider(FlagStore(database, "test"))
                set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100}, who="fault-test")
            finally:
                database.close()
            locked, release = threading.Event(), threading.Event()

            def hold_lock() -> None:
                with psycopg.connect(shared_database_url) as conn:
                    conn.execute("LOCK TABLE live_flags IN ACCESS EXCLUSIVE MODE")
                    locked.set()
                    release.wait(60)

            holder = threading.Thread(target=hold_lock)
            holder.start()
            try:
                assert await asyncio.to_thread(locked.wait, 10)
                started = time.monotonic()
                record = await asyncio.wait_for((await stack.start(stack.request("stalled"))).result(), 60)
                took = time.monotonic() - started
            finally:
                release.set()
                holder.join()
            after = await (await stack.start(stack.request("unstalled"))).result()

    assert record.variant == "instructor" and record.decision is not None
    assert record.flags_error is not None and "not read within" in record.flags_error
    assert after.variant == "dspy" and after.flags_error is None, "the flags serve again once the lock is gone"
    print(f"flags table locked: decided by Instructor in {took:.1f} s, flags error on the record")
