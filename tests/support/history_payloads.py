"""Every ``Payload`` inside a protobuf message (a history, an event), wherever it sits."""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload

from delegation.core.codec import EncryptionCodec


def iter_payloads(message: Message, skip: frozenset[str] = frozenset()) -> Iterator[Payload]:
    """Depth first; a ``Payload`` is yielded itself and not searched further; fields named in ``skip`` are not."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.name in skip:
            continue
        if field.message_type.GetOptions().map_entry:
            for entry in value.values():
                if isinstance(entry, Message):
                    yield from iter_payloads(entry, skip)
        elif isinstance(value, Message):
            yield from iter_payloads(value, skip)
        else:  # a repeated field of messages
            for item in value:
                yield from iter_payloads(item, skip)


def decrypt_in_place(message: Message, codec: EncryptionCodec) -> Message:
    """Replace each encrypted payload of ``message`` by its plaintext (for saving replay fixtures)."""
    for payload in list(iter_payloads(message)):
        payload.CopyFrom(codec.decrypt(payload))
    return message
