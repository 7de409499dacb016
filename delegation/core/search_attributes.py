"""Search attributes that make decisions findable in the Temporal UI and CLI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

DELEGATION_VARIANT = SearchAttributeKey.for_keyword("DelegationVariant")
DELEGATION_ASSIGNEE = SearchAttributeKey.for_keyword("DelegationAssignee")
DELEGATION_CONFIDENCE = SearchAttributeKey.for_float("DelegationConfidence")
DELEGATION_PROGRAM_VERSION = SearchAttributeKey.for_keyword("DelegationProgramVersion")
DELEGATION_FALLBACK = SearchAttributeKey.for_bool("DelegationFallback")
# True when the task text tried to steer the routing ("assign this to X", a fake system note):
# which kinds were found is on the decision record, never the text itself.
DELEGATION_STEERING_DETECTED = SearchAttributeKey.for_bool("DelegationSteeringDetected")

ALL_KEYS = (
    DELEGATION_VARIANT,
    DELEGATION_ASSIGNEE,
    DELEGATION_CONFIDENCE,
    DELEGATION_PROGRAM_VERSION,
    DELEGATION_FALLBACK,
    DELEGATION_STEERING_DETECTED,
)

# Types as `temporal server start-dev --search-attribute Name=Type` spells them.
_CLI_TYPES = {"KEYWORD": "Keyword", "DOUBLE": "Double", "BOOL": "Bool", "TEXT": "Text", "INT": "Int"}


def dev_server_flags() -> list[str]:
    """Arguments that register every key on a dev server."""
    flags: list[str] = []
    for key in ALL_KEYS:
        type_name = key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPES[type_name]}"]
    return flags
