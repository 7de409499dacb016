"""Payload encryption: what Temporal stores about a decision is AES-256-GCM ciphertext.

Every client and worker encodes payloads (workflow inputs and results, activity arguments
and results, queries) and failure messages with the keyring's active key; the key id rides
in the payload's metadata, so payloads written under an older key still decode after a
rotation as long as the keyring keeps that key. Payloads that arrive unencrypted (a client
that does not encrypt, histories recorded before encryption) decode unchanged.

The format, for clients in other languages (the same as Temporal's encryption samples):
metadata ``encoding = binary/encrypted``, ``encryption-cipher = AES-256-GCM``,
``encryption-key-id = <id>``; data = 12-byte nonce ‖ ciphertext+tag of the serialized inner
``Payload`` protobuf, with the key id as associated data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from delegation.core.converter import DATA_CONVERTER

ENCRYPTED_ENCODING = b"binary/encrypted"
CIPHER_NAME = b"AES-256-GCM"
KEY_ID_METADATA = "encryption-key-id"
CIPHER_METADATA = "encryption-cipher"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """A keyring setting that cannot be used, or a payload that cannot be decrypted. Never holds key material."""


@dataclasses.dataclass(frozen=True, repr=False)
class PayloadKeyring:
    """Named AES-256 keys; ``active_id`` encrypts, every key decrypts what was written under its id."""

    keys: Mapping[str, bytes]
    active_id: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise PayloadKeyError("the payload keyring holds no key")
        for key_id, key in self.keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise PayloadKeyError(f"payload key id {key_id[:64]!r} must be 1-64 characters of [A-Za-z0-9._-]")
            if len(key) != KEY_BYTES:
                raise PayloadKeyError(f"payload key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        if self.active_id not in self.keys:
            raise PayloadKeyError(f"the active payload key id {self.active_id!r} is not in the keyring {self.key_ids}")

    @property
    def key_ids(self) -> list[str]:
        return sorted(self.keys)

    def __repr__(self) -> str:  # the keys never reach a log or a traceback
        return f"PayloadKeyring(active_id={self.active_id!r}, key_ids={self.key_ids})"

    @classmethod
    def parse(cls, spec: str, active_id: str | None = None) -> PayloadKeyring:
        """Read ``id:base64key[,id:base64key…]`` (``PAYLOAD_ENCRYPTION_KEYS``); the first is active by default."""
        keys: dict[str, bytes] = {}
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        for position, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id:
                raise PayloadKeyError(f"payload key entry {position} is not `id:base64key`")
            if key_id in keys:
                raise PayloadKeyError(f"payload key id {key_id!r} appears twice")
            keys[key_id] = decode_key(encoded.strip(), key_id)
        if not entries:
            raise PayloadKeyError("the payload key setting is empty")
        return cls(keys=keys, active_id=active_id or next(iter(keys)))

    def to_spec(self) -> str:
        """The ``PAYLOAD_ENCRYPTION_KEYS`` value for this keyring, active key first (a secret)."""
        ordered = [self.active_id, *(k for k in self.keys if k != self.active_id)]
        return ",".join(f"{k}:{encode_key(self.keys[k])}" for k in ordered)

    def with_new_active_key(self, key_id: str, key: bytes | None = None) -> PayloadKeyring:
        """This keyring plus a new key that becomes active; the old keys stay to decrypt older payloads."""
        if key_id in self.keys:
            raise PayloadKeyError(f"payload key id {key_id!r} is in the keyring already")
        return PayloadKeyring(keys={**self.keys, key_id: key or new_key()}, active_id=key_id)


def new_key() -> bytes:
    """A fresh random AES-256 key."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def decode_key(encoded: str, key_id: str) -> bytes:
    """A key from standard or URL-safe base64; the error names the key id, never the text."""
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadKeyError(f"payload key {key_id!r} is not valid base64") from None


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each payload, keyed by the keyring (see the module docstring for the format)."""

    def __init__(self, keyring: PayloadKeyring) -> None:
        self.keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keyring.active_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={
                "encoding": ENCRYPTED_ENCODING,
                CIPHER_METADATA: CIPHER_NAME,
                KEY_ID_METADATA: key_id.encode(),
            },
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload encrypted with key id {key_id!r}, which this keyring ({self.keyring.key_ids}) does not hold"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(
                f"payload under key id {key_id!r} failed authentication (tampered or wrong key)"
            ) from None
        return Payload.FromString(plain)


def is_encrypted(payloads: Iterable[Payload]) -> bool:
    """Whether every payload is ciphertext of this format."""
    items = list(payloads)
    return bool(items) and all(p.metadata.get("encoding") == ENCRYPTED_ENCODING for p in items)


def encrypted_data_converter(keyring: PayloadKeyring) -> DataConverter:
    """The service's converter with payloads and failure messages encrypted under ``keyring``."""
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
