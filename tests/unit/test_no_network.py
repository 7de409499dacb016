"""Importing and running the deciders reaches for no host but the LLM endpoint (litellm price map, DSPy metadata)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from delegation.core.settings import PROJECT_ROOT

PROBE = textwrap.dedent(
    """
    import asyncio, json, socket, sys
    attempts = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(("connect", host))
            raise OSError("network blocked by test")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost", None):
            attempts.append(("resolve", host))
            raise socket.gaierror("network blocked by test")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.getaddrinfo = guarded_getaddrinfo

    from delegation.worker.main import build_dependencies   # the worker's import order
    from delegation.core.settings import Settings
    import dspy, litellm, instructor            # noqa: F401
    from dspy.utils import DummyLM
    from delegation.deciders.dspy_decider import DSPyDecider, load_program
    from delegation.deciders.endpoint import resolve_endpoint, build_dspy_lm
    from delegation.core.models import DelegationRequest

    settings = Settings(_env_file=None, LLM_BASE_URL="http://127.0.0.1:9/v1")
    build_dspy_lm(resolve_endpoint(settings))
    lm = DummyLM([{"assignee_id": "self", "confidence": 0.9, "reasoning": "Rule 8."}], adapter=dspy.JSONAdapter())
    decider = DSPyDecider(lm, resolve_endpoint(settings), load_program(None))
    decision = asyncio.run(decider.decide(DelegationRequest(task_id="t", title="Summarize the notes"))).decision
    print(json.dumps({"attempts": attempts, "assignee": decision.assignee_id}))
    """
)


def test_imports_and_a_dspy_call_stay_off_the_network() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LITELLM_LOCAL_MODEL_COST_MAP", "DSPY_CACHEDIR")}
    result = subprocess.run(  # noqa: PLW1510  # the exit code is asserted below, with the output
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["assignee"] == "self"
    assert outcome["attempts"] == []
