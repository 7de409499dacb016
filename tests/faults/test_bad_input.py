"""Bad task text from a raw, non-Python client: the Temporal CLI starting ``DelegationWorkflow`` by name.

Empty text, a 1 MB title and bytes that are not UTF-8 bypass every Python-side check; the
worker must refuse each before any LLM call, with a non-retryable ``InvalidInput`` that names
the field without echoing it, and the history must hold the input once (no copies).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from delegation.devstack.stack import temporal_binary
from tests.faults.conftest import FaultStack
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer

ONE_MB = 1024 * 1024


def _cli_start(stack: FaultStack, workflow_id: str, payload: bytes, folder: Path) -> None:
    """``temporal workflow start`` with the bytes of ``payload`` as its input file, sent as they are."""
    input_file = folder / f"{workflow_id}.json"
    input_file.write_bytes(payload)
    address = stack.env["TEMPORAL_ADDRESS"]
    done = subprocess.run(
        [
            str(temporal_binary()),
            "workflow",
            "start",
            "--address",
            address,
            "--type",
            "DelegationWorkflow",
            "--task-queue",
            stack.task_queue,
            "--workflow-id",
            workflow_id,
            "--input-file",
            str(input_file),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"temporal workflow start failed: {done.stdout}\n{done.stderr}"


CASES = {
    "empty-title": json.dumps({"task_id": "raw-empty", "title": ""}).encode(),
    "one-megabyte": json.dumps({"task_id": "raw-big", "title": "x" * ONE_MB}).encode(),
    "not-utf8": b'{"task_id": "raw-bytes", "title": "Pay the \xff\xfe invoice"}',
}


@pytest.mark.parametrize("case", list(CASES))
async def test_raw_bad_task_text_is_refused_before_any_llm_call(
    fault_stack_factory: Any, tmp_path: Path, case: str
) -> None:
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url)
        with stack.worker:
            workflow_id = f"delegation-raw-{case}-{uuid.uuid4().hex[:8]}"
            _cli_start(stack, workflow_id, CASES[case], tmp_path)
            handle = stack.client.get_workflow_handle(workflow_id)
            with pytest.raises(WorkflowFailureError) as info:
                await handle.result()
            history = await handle.fetch_history()
        assert llm.requests == [], "an LLM was called for an input that cannot be a request"

    cause = info.value.cause
    assert getattr(cause, "type", None) == "InvalidInput", cause
    message = str(cause)
    assert len(message) < 500 and "xxxx" not in message and "Pay the" not in message, message
    size = sum(event.ByteSize() for event in history.events)
    assert size < len(CASES[case]) + 20_000, f"history of {size} bytes for an input of {len(CASES[case])}"
    assert stack.rows(workflow_id) == []
    print(f"{case}: refused as InvalidInput ({message[:80]}); history {size:,} bytes for {len(CASES[case]):,}")
