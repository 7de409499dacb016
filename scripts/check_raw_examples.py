"""Quick structural check of hand-written example files (helpers use it while writing the dataset)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from delegation.core.models import DelegationRequest
from delegation.core.team import default_team

DEFAULT_IDS = {a.id for a in default_team()}


def check(path: Path) -> int:
    errors = 0
    labels: Counter[str] = Counter()
    titles: set[str] = set()
    custom = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            label = item.pop("label")
            example_id = item.pop("id")
            request = DelegationRequest.model_validate({"task_id": example_id, **item})
        except Exception as err:  # report and continue
            print(f"{path}:{number}: {err}")
            errors += 1
            continue
        ids = {a.id for a in request.assignees} if request.assignees else DEFAULT_IDS
        custom += request.assignees is not None
        if label not in ids:
            print(f"{path}:{number}: label {label!r} is not one of {sorted(ids)}")
            errors += 1
        key = request.title.strip().lower()
        if key in titles:
            print(f"{path}:{number}: duplicate title {request.title!r}")
            errors += 1
        titles.add(key)
        labels[label] += 1
    print(f"{path}: {sum(labels.values())} examples, {custom} with their own candidates, labels {dict(labels)}")
    return errors


if __name__ == "__main__":
    sys.exit(1 if sum(check(Path(p)) for p in sys.argv[1:]) else 0)
