"""What every decider offers: activities, evaluation and the optimizer depend on this, not on a class."""

from __future__ import annotations

from typing import Protocol

from delegation.core.activity_io import DeciderResult
from delegation.core.models import DelegationRequest


class Decider(Protocol):
    """Decides one request; ``program_version`` and ``model`` say what answered.

    ``decide`` raises ``DeciderError`` (``delegation.deciders.errors``) when it cannot decide.
    """

    @property
    def program_version(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def decide(self, request: DelegationRequest) -> DeciderResult: ...
