"""A seeded API key and seeded personal data, with debug logging on: where do they end up?

A Temporal dev server of this test's own (its log at debug level, to a file), a worker
subprocess at ``LOG_LEVEL=DEBUG`` whose LLM key is a seeded value, and a scripted endpoint
that answers some tasks and, for others, echoes the key back in a 401 body (as OpenAI's
"Incorrect API key provided: sk-…" does). Decisions by both deciders, a failed one, feedback,
and a training-set version built from the stored decisions. Then every output is searched:
the worker's and the server's logs, the training-data log, the SQLite file, the artifact
and data folders, the training set and the Temporal histories fetched through the client.

The key: nowhere. Personal data: only where the README's "Personal data" section says (the
decision store and the training-data log hold the task; training sets hold it redacted but
for names; ``LIBRARY_LOG_LEVEL=DEBUG`` logs prompts).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError

from delegation.core.codec import encrypted_data_converter
from delegation.core.models import DelegationFeedback, DelegationRequest
from delegation.core.search_attributes import dev_server_flags
from delegation.devstack.stack import port_open, temporal_binary
from delegation.learning.training_set import TrainingSetStore
from delegation.store.database import SQLiteDatabase
from delegation.workflows.client import send_feedback
from tests.faults.conftest import FaultStack
from tests.support.loopback import free_port, stop_process
from tests.support.payload_keys import TEST_KEYRING
from tests.support.scripted_openai import ScriptedOpenAI, error, last_user_text, routing_answer
from tests.support.worker_process import WorkerProcess

SEEDED_KEY = f"sk-seeded-{uuid.uuid4().hex}"
NAME, EMAIL, PHONE, ADDRESS = "Jane Roe", "jane.roe@example.com", "+1 415 555 0199", "12 Elm Street"
PERSONAL = {"name": NAME, "email": EMAIL, "phone": PHONE, "address": ADDRESS}
DESCRIPTION = f"Tenant {NAME}, {ADDRESS}, Springfield; reach her at {EMAIL} or {PHONE}."


@pytest.fixture
def debug_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A dev server of this test's own, logging at debug level to a file we can search."""
    port, log = free_port(), tmp_path / "temporal-server.log"
    argv = [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "debug",
        *dev_server_flags(),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            if port_open("127.0.0.1", port):
                break
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.25)
        yield f"127.0.0.1:{port}", log
    finally:
        stop_process(process)


@pytest_asyncio.fixture
async def debug_client(debug_server: tuple[str, Path]) -> Client:
    address, _ = debug_server
    for _ in range(60):
        try:
            return await Client.connect(address, data_converter=encrypted_data_converter(TEST_KEYRING))
        except RuntimeError:
            await asyncio.sleep(0.5)
    raise AssertionError(f"the debug dev server at {address} never answered")


def _respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if "refused" in last_user_text(body):
        # What OpenAI answers a bad key with: the key, echoed.
        return error(401, f"Incorrect API key provided: {SEEDED_KEY}. You can find your API key at ...")
    return routing_answer("legal-counsel", 0.9)


def _hits(data: bytes, needles: dict[str, str]) -> list[str]:
    return [label for label, needle in needles.items() if needle.encode() in data]


def _files(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file())


async def _decide_all(stack: FaultStack, tag: str) -> list[str]:
    ids = []
    for variant, name in (("instructor", "lease"), ("dspy", "lease")):
        stack.set_flags({"USE_DSPY_DELEGATION": variant == "dspy", "DSPY_ROLLOUT_PERCENTAGE": 100})
        request = stack.request(
            f"{tag}-{variant}-{name}", title=f"Renew the office lease for {NAME}", description=DESCRIPTION
        )
        record = await (await stack.start(request)).result()
        assert record.decision is not None and record.variant == variant
        ids.append(record.workflow_id)
    stack.set_flags({"USE_DSPY_DELEGATION": False})
    refused = DelegationRequest(
        task_id=f"{stack.prefix}-{tag}-refused", title=f"Lease for {NAME}, refused", description=DESCRIPTION
    )
    with pytest.raises(WorkflowFailureError):
        await (await stack.start(refused)).result()
    ids.append(refused.workflow_id)
    return ids


async def test_a_seeded_key_appears_nowhere_and_personal_data_only_where_documented(
    fault_stack_factory: Any, debug_client: Client, debug_server: tuple[str, Path]
) -> None:
    _, server_log = debug_server
    with ScriptedOpenAI(_respond) as llm:
        stack: FaultStack = fault_stack_factory(
            llm.base_url, temporal=debug_client, LLM_API_KEY=SEEDED_KEY, LOG_LEVEL="DEBUG"
        )
        with stack.worker:
            ids = await _decide_all(stack, "quiet")
            feedback = DelegationFeedback(
                task_id=f"{stack.prefix}-quiet-instructor-lease",
                outcome="reassigned",
                correct_assignee_id="finance-manager",
                comment=f"{NAME} ({EMAIL}) says finance owns leases",
            )
            await send_feedback(debug_client, feedback, task_queue=stack.task_queue)
        quiet_worker_log = stack.worker.output().encode()

        # Again with the libraries' own debug logging on (openai, httpx, litellm, Instructor).
        loud = WorkerProcess({**stack.env, "LIBRARY_LOG_LEVEL": "DEBUG"}, stack.folder / "worker-loud.log")
        with loud:
            ids += await _decide_all(stack, "loud")
        loud_worker_log = loud.output().encode()

    # The key really was used: the endpoint received it on every call.
    sent = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in llm.headers]
    assert sent and set(sent) == {f"Bearer {SEEDED_KEY}"}

    # A training set built from the stored decisions, as the monthly run does.
    rows = [stack.rows(workflow_id)[-1] for workflow_id in ids[:2]]
    training = TrainingSetStore(SQLiteDatabase(stack.db_path))
    result = training.extend("pii-check", [(r.workflow_id, r.request, "finance-manager") for r in rows])
    training_text = "\n".join(e.model_dump_json() for e in training.load(result.version)).encode()

    histories = b""
    for workflow_id in ids:
        events = (await debug_client.get_workflow_handle(workflow_id).fetch_history()).events
        histories += b"".join(e.SerializeToString() for e in events)

    key = {"key": SEEDED_KEY}
    outputs = {
        "worker log (debug)": quiet_worker_log,
        "worker log (library debug)": loud_worker_log,
        "server log (debug)": server_log.read_bytes(),
        "training-data log": stack.log_path.read_bytes(),
        "SQLite store": stack.db_path.read_bytes(),
        "training set": training_text,
        "histories": histories,
        **{f"file {p.relative_to(stack.folder)}": p.read_bytes() for p in _files(stack.folder / "data")},
    }
    assert len(server_log.read_bytes()) > 10_000, "the server's debug log is too short to mean anything"
    assert {where: hits for where, data in outputs.items() if (hits := _hits(data, key))} == {}

    # Personal data, where it is and where it must not be.
    assert _hits(stack.db_path.read_bytes(), PERSONAL) == list(PERSONAL)  # the decision store: documented
    assert _hits(stack.log_path.read_bytes(), PERSONAL) == list(PERSONAL)  # the training-data log: documented
    assert _hits(training_text, PERSONAL) == ["name"]  # redacted but for names: documented
    assert _hits(histories, PERSONAL) == []  # encrypted
    assert _hits(server_log.read_bytes(), PERSONAL) == []
    assert _hits(quiet_worker_log, PERSONAL) == []  # the service logs ids, never task text
    assert _hits(loud_worker_log, PERSONAL) != []  # LIBRARY_LOG_LEVEL=DEBUG logs prompts: documented
    assert b"Incorrect API key provided: [redacted]" in quiet_worker_log + stack.db_path.read_bytes()
