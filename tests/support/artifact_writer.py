"""Writes and promotes program versions in a loop until killed: ``python -m tests.support.artifact_writer
MODE DB_PATH SHIPPED_DIR``.

``store``: each version goes into the SQLite store and is promoted (what the re-optimization
does); ``ship``: each version is shipped to the folder (what an optimizer run with
``--artifact-dir`` does). Prints ``wrote N`` after each, so the test knows it is mid-loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

from delegation.deciders.dspy_program import DelegationDecider
from delegation.learning.registry import ArtifactRegistry
from delegation.store.database import SQLiteDatabase
from tests.support.factories import manifest_fields


def main(mode: str, db_path: Path, shipped: Path) -> None:
    registry = ArtifactRegistry(SQLiteDatabase(db_path), builtin_dir=shipped)
    program = DelegationDecider()
    while True:
        if mode == "ship":
            manifest = registry.write_version(program, manifest_fields(), directory=shipped)
        else:
            manifest = registry.write_version(program, manifest_fields())
            registry.promote(manifest.version, who="artifact-writer")
        print(f"wrote {manifest.version}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
