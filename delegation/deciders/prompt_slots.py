"""Which llama.cpp slot a request goes to, so that each fixed prompt prefix keeps a slot warm.

The embedded server keeps one prompt per slot and reuses its longest common prefix. Two
deciders with different prefixes on one slot would evict each other at every switch (a
~2,000-token prefill, ~40 s on 2 cores), and a custom candidate list after a default-team
request would pay for the list again. So each decider gets two slots: one for default-team
requests, one for requests that bring their own list (the last list seen stays cached there,
after the same shared prefix). Only for the embedded server: other endpoints cache prefixes
on their own and may refuse the ``id_slot`` field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from delegation.core.models import Variant

# default-team slot, custom-list slot, per decider
SLOT_LAYOUT: dict[Variant, tuple[int, int]] = {"dspy": (0, 1), "instructor": (2, 3)}
# Optimization and evaluation runs try other programs: they get a slot of their own, so the
# serving prefixes stay warm through a monthly re-optimization.
OFFLINE_SLOT = 1 + max(slot for pair in SLOT_LAYOUT.values() for slot in pair)
SLOTS_NEEDED = OFFLINE_SLOT + 1


@dataclass(frozen=True)
class SlotPlan:
    """The slot for each decider's requests (``SLOT_LAYOUT``), or the offline slot for all of them."""

    offline: bool = False

    def slot_for(self, variant: Variant, custom_candidates: bool) -> int:
        """The slot for a request of this decider, with or without its own candidate list."""
        if self.offline:
            return OFFLINE_SLOT
        default_slot, custom_slot = SLOT_LAYOUT[variant]
        return custom_slot if custom_candidates else default_slot


def slot_plan_for(embedded: bool, slots: int) -> SlotPlan | None:
    """A plan when the endpoint is the embedded server with enough slots; None otherwise (no ``id_slot`` sent)."""
    return SlotPlan() if embedded and slots >= SLOTS_NEEDED else None


def prefix_key(model: str, messages: list[dict[str, str]]) -> str:
    """A name for a fixed prompt prefix: its saved slot file is valid only for this model and these messages."""
    digest = hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()
    return digest[:24]


async def save_slot(base_url: str, slot: int, filename: str, timeout_s: float, api_key: str = "") -> bool:
    """Ask the llama.cpp server to save a slot's prompt and KV cache; False when it cannot (logged by the caller)."""
    return await _slot_action(base_url, slot, "save", filename, timeout_s, api_key)


async def restore_slot(base_url: str, slot: int, filename: str, timeout_s: float, api_key: str = "") -> bool:
    """Load a saved prompt into a slot; False when there is no such file or the server refuses it."""
    return await _slot_action(base_url, slot, "restore", filename, timeout_s, api_key)


async def _slot_action(base_url: str, slot: int, action: str, filename: str, timeout_s: float, api_key: str) -> bool:
    import httpx

    url = f"{base_url.removesuffix('/v1')}/slots/{slot}?action={action}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            response = await client.post(url, json={"filename": filename}, headers=headers)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
