"""JSON Schemas of the wire contract, for upstream services in any language."""

from __future__ import annotations

import json

from pydantic import BaseModel

from delegation.core.models import DecisionRecord, DelegationFeedback, DelegationRequest, FeedbackReceipt

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "delegation_request.schema.json": DelegationRequest,
    "decision_record.schema.json": DecisionRecord,
    "delegation_feedback.schema.json": DelegationFeedback,
    "feedback_receipt.schema.json": FeedbackReceipt,
}


def schema_text(model: type[BaseModel]) -> str:
    """The model's JSON Schema (validation mode: what a sender must produce), stable formatting."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
