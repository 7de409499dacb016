"""A worker whose HOME or data folder cannot be written: it serves, or fails fast naming the path.

Root writes through file modes, so "unwritable" is made the way it is for root too: the path
runs through a regular file (every create under it fails with ENOTDIR).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.faults.conftest import FaultStack
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer


def _blocker(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a folder")
    return blocker


async def test_a_read_only_home_does_not_stop_the_worker(fault_stack_factory: Any, tmp_path: Path) -> None:
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url)
        stack.worker.env["HOME"] = str(_blocker(tmp_path) / "home")
        with stack.worker:
            stack.set_flags({"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100})
            record = await (await stack.start(stack.request("home"))).result()
    assert record.variant == "dspy" and record.decision is not None and not record.fallback_used


def test_an_unwritable_data_folder_fails_fast_naming_the_path(fault_stack_factory: Any, tmp_path: Path) -> None:
    stack: FaultStack = fault_stack_factory("http://127.0.0.1:9/v1")
    data_dir = _blocker(tmp_path) / "data"
    env = {**stack.env, "DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "delegation.worker"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "worker cannot start" in line]
    assert len(lines) == 1 and str(data_dir) in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
