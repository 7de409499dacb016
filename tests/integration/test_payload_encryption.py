"""What Temporal stores is ciphertext; the codec server, the Temporal CLI and the Web UI still read it.

On the real dev server: a decision's raw history (as the server hands it to anyone who asks)
holds no task text in any payload or failure message; search attributes hold none either;
the codec server decrypts the same payloads for `temporal workflow show --codec-endpoint`
and for the Web UI, checked in headless Chromium against a stack started by the stack code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from delegation.core.codec import is_encrypted
from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.core.settings import PROJECT_ROOT, get_settings
from delegation.deciders.endpoint import build_async_openai
from delegation.deciders.instructor_decider import InstructorDecider
from delegation.devstack.stack import Stack, temporal_binary
from delegation.store.decisions import DecisionStore
from delegation.store.payload_keys import keyring_for
from delegation.worker.main import WorkerDependencies, build_worker
from delegation.workflows.client import connect, start_delegation
from tests.support.browser import open_page
from tests.support.factories import endpoint_for
from tests.support.flags import flag_provider, set_flags
from tests.support.history_payloads import iter_payloads
from tests.support.loopback import codec_server as codec_server_in_process
from tests.support.loopback import free_port
from tests.support.payload_keys import TEST_KEYRING
from tests.support.scripted_openai import ScriptedOpenAI, error, routing_answer

# Personal data a task may carry: none of it may reach Temporal in clear.
TITLE = "Renew the office lease for Jane Roe"
DESCRIPTION = "Call her at +1 415 555 0199 or jane.roe@example.com; 12 Elm Street, Springfield"
SECRETS = ("Jane Roe", "555 0199", "jane.roe@example.com", "Elm Street")
# Screenshots of the UI check land here (`/data/` is in .gitignore): looked at, never committed.
SCREENSHOT_DIR = PROJECT_ROOT / "data" / "ui-checks"


def _chain(err: BaseException | None) -> list[BaseException]:
    found = []
    while err is not None:
        found.append(err)
        err = err.__cause__
    return found


# Marker keys the SDK writes for its own bookkeeping (a local activity's id, attempt and times; a
# patch id), which no codec encodes; a local activity's result sits under another key, encrypted.
SDK_MARKER_KEYS = frozenset({"data", "patch-data"})


def _user_payloads(event: HistoryEvent) -> list[Payload]:
    """Every payload of an event that carries the service's data: not search attributes (stored in
    clear by design, checked apart), not the SDK's own marker bookkeeping."""
    if event.HasField("marker_recorded_event_attributes"):
        details = event.marker_recorded_event_attributes.details
        return [p for key, group in details.items() if key not in SDK_MARKER_KEYS for p in group.payloads]
    return list(iter_payloads(event, skip=frozenset({"search_attributes"})))


def _search_attribute_text(events: list[HistoryEvent]) -> str:
    found = []
    for event in events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        else:
            fields = event.workflow_execution_started_event_attributes.search_attributes.indexed_fields
        found += [p.data.decode("utf-8", "replace") for p in fields.values()]
    return " ".join(found)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _payload_text(history_json: str) -> str:
    """The payload data of a `temporal workflow show --output json` history, base64-decoded and joined."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                found.append(base64.b64decode(node["data"]).decode("utf-8", "replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return "\n".join(found)


def _request(prefix: str) -> DelegationRequest:
    return DelegationRequest(task_id=f"{prefix}-lease", title=TITLE, description=DESCRIPTION)


@pytest_asyncio.fixture
async def codec_server() -> AsyncIterator[str]:
    """The codec server's app in this process, on a free loopback port."""
    async with codec_server_in_process(TEST_KEYRING, ["http://127.0.0.1:8233"]) as url:
        yield url


async def test_a_decisions_history_holds_only_ciphertext_and_the_codec_server_reads_it(  # type: ignore[no-untyped-def]
    harness, codec_server: str, temporal_env: WorkflowEnvironment
) -> None:
    async with harness(lambda body: routing_answer("legal-counsel", 0.9), []) as h:
        h.set_flags(USE_DSPY_DELEGATION=False)
        handle = await h.start(_request(h.prefix))
        record = await handle.result()
        assert record.decision is not None and record.decision.assignee_id == "legal-counsel"
        assert record.request.title == TITLE  # the client decrypts what it reads

        events = list((await handle.fetch_history()).events)
        payloads = [p for e in events for p in _user_payloads(e)]
        # Input, flags, the decider's input and answer, the record, the result: all sealed.
        assert len(payloads) >= 6 and is_encrypted(payloads), [
            (e.event_type, p.data) for e in events for p in _user_payloads(e) if not is_encrypted([p])
        ]
        raw = b"".join(e.SerializeToString() for e in events)
        assert not [s for s in SECRETS if s.encode() in raw]
        assert not [s for s in SECRETS if s in _search_attribute_text(events)]

        # The codec server turns the same payloads back into the request.
        import httpx

        started = events[0].workflow_execution_started_event_attributes.input
        async with httpx.AsyncClient(trust_env=False) as http:
            answer = await http.post(f"{codec_server}/decode", content=json_format.MessageToJson(started))
        assert answer.status_code == 200
        decoded = json_format.Parse(answer.text, Payloads())
        assert DelegationRequest.model_validate_json(decoded.payloads[0].data).description == DESCRIPTION

        # An operator's Temporal CLI reads the history through it; without it, only ciphertext.
        show = [str(temporal_binary()), "workflow", "show", "-w", handle.id, "--output", "json"]
        address = ["--address", temporal_env.client.service_client.config.target_host]
        # In threads: the codec server answers from this test's event loop.
        through, plain = await asyncio.gather(
            asyncio.to_thread(_run, [*show, *address, "--codec-endpoint", codec_server]),
            asyncio.to_thread(_run, [*show, *address]),
        )
        assert through.returncode == 0 and plain.returncode == 0, through.stderr + plain.stderr
        assert "Jane Roe" in _payload_text(through.stdout) and "legal-counsel" in _payload_text(through.stdout)
        assert not [s for s in SECRETS if s in _payload_text(plain.stdout) or s in plain.stdout]


async def test_failure_messages_are_encrypted_and_read_back_by_the_client(harness) -> None:  # type: ignore[no-untyped-def]
    async with harness(lambda body: error(401, "invalid api key"), []) as h:
        h.set_flags(USE_DSPY_DELEGATION=False)
        handle = await h.start(_request(h.prefix))
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        assert "Encoded failure" not in str(caught.value.cause)

        events = list((await handle.fetch_history()).events)
        failed = [e for e in events if e.HasField("workflow_execution_failed_event_attributes")]
        assert failed, [e.event_type for e in events]
        failure = failed[0].workflow_execution_failed_event_attributes.failure
        assert failure.message == "Encoded failure" and failure.stack_trace == ""
        assert is_encrypted([failure.encoded_attributes])


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A stack of the real stack code (codec server, then the dev server with its UI) on free ports."""
    values = {
        "APP_ENV": "dev",
        "DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_UI_PORT": str(free_port()),
        "CODEC_SERVER_PORT": str(free_port()),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",  # never called: the stack needs no model here
    }
    monkeypatch.delenv("PAYLOAD_ENCRYPTION_KEYS", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)  # the stack's processes read the same settings
    stack = Stack(get_settings())
    try:
        stack.start_codec()
        stack.start_temporal()
        yield stack
    finally:
        stack.down()


async def test_the_web_ui_shows_a_decision_through_the_codec_server(stack_env: Stack, tmp_path: Path) -> None:
    settings = stack_env.settings
    client = await connect(settings.temporal_address, settings.temporal_namespace, keyring=keyring_for(settings))
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as server:
        endpoint = endpoint_for(server.base_url)
        flags = flag_provider(tmp_path)
        set_flags(flags, {"USE_DSPY_DELEGATION": False})
        instructor = InstructorDecider(build_async_openai(endpoint), endpoint)
        deps = WorkerDependencies(
            endpoint=endpoint,
            instructor=instructor,
            dspy=instructor,  # DSPy is off in this test
            store=DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log"),
            flags=flags,
        )
        queue = f"ui-check-{uuid.uuid4().hex[:8]}"
        worker = build_worker(client, deps, task_queue=queue, llm_concurrency=2, llm_timeout_s=10)
        async with worker:
            handle: WorkflowHandle = await start_delegation(client, _request(uuid.uuid4().hex[:8]), task_queue=queue)
            await handle.result()

    raw = b"".join(e.SerializeToString() for e in (await handle.fetch_history()).events)
    assert b"Jane Roe" not in raw

    url = f"{stack_env.ui_address}/namespaces/{settings.temporal_namespace}/workflows/{handle.id}"
    started = time.monotonic()
    async with open_page(url) as page:
        text = await page.wait_for_text("legal-counsel", timeout_s=60)
        shot = await page.screenshot(SCREENSHOT_DIR / f"workflow-{os.getpid()}.png")
    assert "Jane Roe" in text, f"the UI did not show the decrypted input within {time.monotonic() - started:.0f} s"
    assert "legal-counsel" in text, "the UI did not show the decrypted result"
    assert "binary/encrypted" not in text
    assert shot.stat().st_size > 10_000


async def test_a_worker_without_the_key_loses_nothing_until_one_with_it_takes_over(  # type: ignore[no-untyped-def]
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A key rollout caught half-way: the workflow waits (its task retried) instead of failing."""
    from temporalio.client import Client

    from delegation.core.codec import PayloadKeyring, encrypted_data_converter, new_key

    old = PayloadKeyring(keys={"k-old": new_key()}, active_id="k-old")
    only_new = PayloadKeyring(keys={"k-new": new_key()}, active_id="k-new")
    both = PayloadKeyring(keys={**old.keys, **only_new.keys}, active_id="k-new")
    target = temporal_env.client.service_client.config.target_host

    async def client_for(ring: PayloadKeyring) -> Client:
        return await Client.connect(target, data_converter=encrypted_data_converter(ring))

    caller, stale, current = await client_for(old), await client_for(only_new), await client_for(both)
    queue = f"key-rollout-{uuid.uuid4().hex[:8]}"
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as server:
        endpoint = endpoint_for(server.base_url)
        flags = flag_provider(tmp_path)
        set_flags(flags, {"USE_DSPY_DELEGATION": False})
        instructor = InstructorDecider(build_async_openai(endpoint), endpoint)
        store = DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
        deps = WorkerDependencies(endpoint=endpoint, instructor=instructor, dspy=instructor, store=store, flags=flags)
        handle = await start_delegation(caller, _request(uuid.uuid4().hex[:8]), task_queue=queue)

        async with build_worker(stale, deps, task_queue=queue, llm_concurrency=2, llm_timeout_s=10):
            failures: list[Any] = []
            for _ in range(60):
                events = list((await handle.fetch_history()).events)
                failures = [
                    e.workflow_task_failed_event_attributes.failure
                    for e in events
                    if e.HasField("workflow_task_failed_event_attributes")
                ]
                if failures:
                    break
                await asyncio.sleep(0.5)
        assert failures, "the worker without the key should have failed the workflow task"
        # The failure itself is sealed (under the stale worker's key); read it as an operator would.
        reason = await current.data_converter.decode_failure(failures[0])
        assert "'k-old'" in "".join(str(e) for e in _chain(reason)), _chain(reason)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert store.get(handle.id) == []

        async with build_worker(current, deps, task_queue=queue, llm_concurrency=2, llm_timeout_s=10):
            record = await current.get_workflow_handle(handle.id, result_type=DecisionRecord).result()
    assert record.decision is not None and record.decision.assignee_id == "legal-counsel"
    assert len(store.get(handle.id)) == 1
