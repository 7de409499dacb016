"""The committed JSON Schemas match the models (so they cannot go stale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from delegation.cli.main import write_schemas
from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.core.schemas import SCHEMA_MODELS, schema_text

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


@pytest.mark.parametrize(
    ("filename", "model"),
    [("delegation_request.schema.json", DelegationRequest), ("decision_record.schema.json", DecisionRecord)],
)
def test_committed_schema_matches_model(filename: str, model: type) -> None:
    assert SCHEMA_MODELS[filename] is model
    committed = (SCHEMA_DIR / filename).read_text(encoding="utf-8")
    assert committed == schema_text(model), (
        f"schemas/{filename} is stale: regenerate it with `delegation schemas export`"
    )


def test_every_schema_model_has_a_committed_file() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(SCHEMA_MODELS)


def test_write_schemas_reproduces_the_committed_files(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(SCHEMA_MODELS)
    for path in written:
        assert path.read_bytes() == (SCHEMA_DIR / path.name).read_bytes()


def test_schema_text_is_draft_2020_12_json() -> None:
    schema = json.loads(schema_text(DelegationRequest))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "DelegationRequest"
    assert schema["additionalProperties"] is False


def test_valid_request_holds_every_required_key() -> None:
    schema = json.loads((SCHEMA_DIR / "delegation_request.schema.json").read_text(encoding="utf-8"))
    required = schema["required"]
    assert set(required) == {"task_id", "title"}
    request = {"task_id": "task-1", "title": "Book a room"}
    DelegationRequest.model_validate(request)
    assert set(required) <= set(request)
    assert set(request) <= set(schema["properties"])
    # Dropping any required key makes the model reject the request too.
    for key in required:
        with pytest.raises(ValidationError):
            DelegationRequest.model_validate({k: v for k, v in request.items() if k != key})


def test_decision_record_schema_requires_what_the_model_requires() -> None:
    schema = json.loads((SCHEMA_DIR / "decision_record.schema.json").read_text(encoding="utf-8"))
    model_required = {name for name, field in DecisionRecord.model_fields.items() if field.is_required()}
    assert set(schema["required"]) == model_required
