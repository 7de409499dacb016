"""Labeled delegation examples: loading, checking, and the stable train/dev/test split.

JSON Lines, one example per line::

    {"id", "title", "description"?, "priority"?, "assignees"? (omitted: the default team), "label"}

The split is a stable hash of the example id, so adding examples never moves old ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from delegation.core.models import Assignee, DelegationRequest, Priority, describe_validation_error
from delegation.core.team import candidates_for

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
# Chosen once so the 245 examples split 122/61/62; fixed from then on.
SPLIT_SALT = "delegation-split-32"
DEFAULT_DATASET = Path(__file__).resolve().parent / "data" / "delegation_examples.jsonl"


class DatasetError(ValueError):
    """A dataset file cannot be used; the message names the file and line."""


class LabeledExample(BaseModel):
    """One hand-labeled task and the assignee the policy gives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    description: str = ""
    priority: Priority = "normal"
    assignees: list[Assignee] | None = None
    label: str
    # None rather than False, so that files without the field stay byte-identical when rewritten.
    steering: Literal[True] | None = Field(
        default=None, description="A steering case: the task text tries to move the decision; the label ignores it."
    )

    def to_request(self) -> DelegationRequest:
        """The request an upstream service would send for this task."""
        return DelegationRequest(
            task_id=f"example-{self.id}",
            title=self.title,
            description=self.description,
            priority=self.priority,
            assignees=self.assignees,
        )

    @property
    def split(self) -> Split:
        return split_of(self.id)

    @property
    def candidate_ids(self) -> list[str]:
        return [a.id for a in candidates_for(self.to_request())]


def split_of(example_id: str) -> Split:
    """train (50 %), dev (25 %) or test (25 %), from a stable hash of the id."""
    bucket = int.from_bytes(hashlib.sha256(f"{SPLIT_SALT}:{example_id}".encode()).digest()[:8], "big") % 100
    if bucket < 50:
        return "train"
    return "dev" if bucket < 75 else "test"


@dataclass(frozen=True)
class LoadedExample:
    example: LabeledExample
    path: Path | str  # a file, or the name of a text held elsewhere (a training set version in the store)
    line: int


def _read(path: Path) -> tuple[list[LoadedExample], list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        return [], [f"{path}: cannot be read ({err.strerror})"]
    return _parse(text, path)


def _parse(text: str, path: Path | str) -> tuple[list[LoadedExample], list[str]]:
    loaded: list[LoadedExample] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg})")
            continue
        try:
            example = LabeledExample.model_validate(raw)
            request = example.to_request()
        except ValidationError as err:
            problems.append(f"{where}: {describe_validation_error(err, model_name='example')}")
            continue
        ids = [a.id for a in candidates_for(request)]
        if example.label not in ids:
            problems.append(f"{where}: label {example.label!r} is not one of the candidates {ids}")
            continue
        loaded.append(LoadedExample(example, path, number))
    return loaded, problems


def text_keys(example: LabeledExample) -> list[str]:
    """The normalized texts two examples must not share across splits (title, and description if any)."""
    keys = [" ".join(example.title.lower().split())]
    if example.description.strip():
        keys.append(" ".join(example.description.lower().split()))
    return keys


def check_files(paths: Sequence[Path]) -> tuple[list[LabeledExample], list[str]]:
    """Load every file and report every problem.

    Malformed lines, bad labels, duplicate ids and text shared across splits are all reported.
    """
    loaded: list[LoadedExample] = []
    problems: list[str] = []
    for path in paths:
        items, file_problems = _read(path)
        loaded.extend(items)
        problems.extend(file_problems)
    return _cross_check(loaded, problems)


def check_text(text: str, name: str) -> tuple[list[LabeledExample], list[str]]:
    """``check_files`` for JSONL text held elsewhere; problems name ``name`` and the line."""
    loaded, problems = _parse(text, name)
    return _cross_check(loaded, problems)


def _cross_check(loaded: list[LoadedExample], problems: list[str]) -> tuple[list[LabeledExample], list[str]]:
    first_by_id: dict[str, LoadedExample] = {}
    first_by_text: dict[str, LoadedExample] = {}
    for item in loaded:
        where = f"{item.path}:{item.line}"
        previous = first_by_id.get(item.example.id)
        if previous is not None:
            problems.append(f"{where}: duplicate id {item.example.id!r} (first at {previous.path}:{previous.line})")
        else:
            first_by_id[item.example.id] = item
        for key in text_keys(item.example):
            other = first_by_text.get(key)
            if other is None:
                first_by_text[key] = item
            elif other.example.split != item.example.split:
                problems.append(
                    f"{where}: text shared with {other.path}:{other.line} across splits "
                    f"({item.example.split} vs {other.example.split})"
                )
    return [item.example for item in loaded], problems


def load_examples(
    paths: str | Path | Sequence[str | Path] = DEFAULT_DATASET, split: Split | None = None
) -> list[LabeledExample]:
    """Examples from one or more files (optionally one split); raises DatasetError listing every problem."""
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    examples, problems = check_files(files)
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{len(problems)} problem(s) in {', '.join(map(str, files))}:\n{shown}{more}")
    return [e for e in examples if split is None or e.split == split]


def dataset_sha256(examples: Iterable[LabeledExample]) -> str:
    """A hash of the examples' content, for artifact manifests."""
    digest = hashlib.sha256()
    for example in sorted(examples, key=lambda e: e.id):
        digest.update(example.model_dump_json().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def split_files_text(examples: Sequence[LabeledExample]) -> dict[Split, str]:
    """The examples of each split as JSONL text, in file order (``delegation/learning/data/{train,dev,test}.jsonl``)."""
    texts: dict[Split, str] = {}
    for split in ("train", "dev", "test"):
        lines = [e.model_dump_json(exclude_defaults=True) for e in examples if e.split == split]
        texts[split] = "".join(line + "\n" for line in lines)
    return texts
