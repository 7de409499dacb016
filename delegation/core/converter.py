"""The data converter every client, worker and replayer uses: pydantic JSON, with clean validation failures.

A payload that fails validation inside a workflow would otherwise fail the workflow
task and be retried forever; here it becomes a non-retryable ``ApplicationError`` that
names the bad fields without echoing their values (failure messages are stored in clear).
"""

from __future__ import annotations

from typing import Any

import temporalio.api.common.v1
from pydantic import ValidationError
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.exceptions import ApplicationError

from delegation.core.models import describe_validation_error

INVALID_INPUT_ERROR = "InvalidInput"


class _ValidatingJSONConverter(PydanticJSONPlainPayloadConverter):
    def from_payload(self, payload: temporalio.api.common.v1.Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except ValidationError as err:
            name = getattr(type_hint, "__name__", None)
            raise ApplicationError(
                describe_validation_error(err, model_name=name), type=INVALID_INPUT_ERROR, non_retryable=True
            ) from None


class DelegationPayloadConverter(CompositePayloadConverter):
    """The default converters with pydantic JSON (validating) in place of plain JSON."""

    def __init__(self) -> None:
        json_converter = _ValidatingJSONConverter()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=DelegationPayloadConverter)
