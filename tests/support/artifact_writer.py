"""Writes and promotes program versions in a loop until killed: ``python -m tests.support.artifact_writer
MODE DB_PATH SHIPPED_DIR``.

``store``: each version goes into the SQLite store and is promoted (what the re-optimization
does); ``ship``: each version is shipped to the folder (what an optimizer run with
``--artifact-dir`` does). Prints ``wrote N`` after each, so the test knows it is mid-loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dspy

from delegation.deciders.dspy_program import DelegationDecider, DelegationSignature
from delegation.learning.registry import ArtifactRegistry
from delegation.store.database import SQLiteDatabase


def _fields() -> dict[str, object]:
    return {
        "optimizer": "labeled",
        "optimizer_params": {"max_demos": 1, "seed": 7},
        "train_sha256": "a" * 64,
        "dev_sha256": "b" * 64,
        "train_size": 10,
        "dev_size": 5,
        "base_dev_score": 0.5,
        "optimized_dev_score": 0.75,
        "model": "scripted-model",
        "dspy_version": dspy.__version__,
        "signature_fields": list(DelegationSignature.fields),
        "parent_version": None,
        "status": "candidate",
        "status_reason": "written by the artifact writer",
    }


def main(mode: str, db_path: Path, shipped: Path) -> None:
    registry = ArtifactRegistry(SQLiteDatabase(db_path), builtin_dir=shipped)
    program = DelegationDecider()
    while True:
        if mode == "ship":
            manifest = registry.write_version(program, _fields(), directory=shipped)
        else:
            manifest = registry.write_version(program, _fields())
            registry.promote(manifest.version, who="artifact-writer")
        print(f"wrote {manifest.version}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
