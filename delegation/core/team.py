"""The default team: the candidates used when a request brings none."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from pydantic import TypeAdapter

from delegation.core.models import Assignee, DelegationRequest

_TEAM_ADAPTER = TypeAdapter(list[Assignee])


@cache
def default_team() -> tuple[Assignee, ...]:
    """The eight default candidates, read once from ``delegation/core/data/default_team.json``."""
    raw = resources.files("delegation.core").joinpath("data/default_team.json").read_text(encoding="utf-8")
    return tuple(_TEAM_ADAPTER.validate_python(json.loads(raw)))


def candidates_for(request: DelegationRequest) -> tuple[Assignee, ...]:
    """The request's own candidates, or the default team when it brings none."""
    return tuple(request.assignees) if request.assignees is not None else default_team()
