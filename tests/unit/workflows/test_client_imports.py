"""An upstream caller that starts decisions imports the contract and temporalio, nothing heavier."""

from __future__ import annotations

import json
import subprocess
import sys

from delegation.core.settings import PROJECT_ROOT

HEAVY = ("dspy", "litellm", "instructor", "openai", "loguru", "sqlite3", "_sqlite3", "numpy", "rich", "typer")
PROBE = f"""
import json, sys
from delegation.workflows.client import connect, decide, send_feedback, start_delegation
print(json.dumps({{
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
    "project": sorted(m for m in sys.modules if m == "delegation" or m.startswith("delegation.")),
}}))
"""


def test_the_client_helper_imports_only_the_contract_and_temporalio() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["heavy"] == [], f"a fresh interpreter importing the client also loaded {loaded['heavy']}"
    rooms = {name.split(".")[1] for name in loaded["project"] if name.count(".") >= 1}
    assert rooms == {"core", "workflows"}, loaded["project"]
    assert set(loaded["project"]) >= {"delegation.workflows.client", "delegation.core.models"}
