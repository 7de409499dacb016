"""A champion tampered with in the store, with its hash made to match: the allowlist refuses it.

While the worker runs it keeps serving the copy it loaded; after a SIGKILL and restart it
refuses the tampered champion with a log line that says where, and serves the last good
version (the shipped champion), not the unoptimized module.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from delegation.learning.registry import ArtifactRegistry
from delegation.store.database import SQLiteDatabase
from tests.faults.conftest import FaultStack
from tests.support.scripted_openai import ScriptedOpenAI, routing_answer


def _tamper_with_matching_hash(registry: ArtifactRegistry, version: int) -> None:
    with registry.store.database.transaction() as tx:
        program_json, manifest_json = tx.fetchone(
            "SELECT program_json, manifest_json FROM artifact_versions WHERE version = ?", (version,)
        )
        state = json.loads(program_json)
        state["route"]["config"] = {"api_base": "http://attacker.invalid/v1", "temperature": 2.0}
        program_json = json.dumps(state)
        manifest = json.loads(manifest_json)
        manifest["sha256"] = hashlib.sha256(program_json.encode("utf-8")).hexdigest()
        tx.execute(
            "UPDATE artifact_versions SET program_json = ?, manifest_json = ? WHERE version = ?",
            (program_json, json.dumps(manifest), version),
        )


async def test_a_tampered_champion_is_refused_and_the_last_good_version_serves_across_a_restart(
    fault_stack_factory: Any,
) -> None:
    with ScriptedOpenAI(lambda body: routing_answer("legal-counsel", 0.9)) as llm:
        stack: FaultStack = fault_stack_factory(llm.base_url)
        stack.db_path.parent.mkdir(parents=True)
        registry = ArtifactRegistry(SQLiteDatabase(stack.db_path))
        shipped = registry.champion()
        assert shipped is not None
        fields = registry.manifest(shipped).model_dump(exclude={"version", "sha256", "created_at"})
        written = registry.write_version(registry.load(shipped).program, {**fields, "status": "candidate"})
        registry.promote(written.version, who="fault-test")
        stack.set_flags({"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100})

        stack.worker.start()
        before = await (await stack.start(stack.request("before"))).result()
        assert before.program_version == f"optimized_delegation_v{written.version}"

        _tamper_with_matching_hash(registry, written.version)
        running = await (await stack.start(stack.request("while-running"))).result()
        stack.worker.kill()
        stack.worker.start()
        after = await (await stack.start(stack.request("after-restart"))).result()
        output = stack.worker.output()

    assert running.program_version == before.program_version, "the loaded copy keeps serving"
    assert after.variant == "dspy" and not after.fallback_used
    assert after.program_version == f"optimized_delegation_v{shipped}", "the last good version serves"
    refusals = [line for line in output.splitlines() if f"refusing artifact version {written.version}" in line]
    assert refusals and "outside the allowlist" in refusals[0] and "route.config" in refusals[0], output[-3000:]
    assert "attacker.invalid" not in output
    print(f"tampered champion v{written.version} refused after restart; serving v{shipped}: {refusals[0][-160:]}")
