"""delegation.core.codec: AES-256-GCM payloads keyed by id, rotation, and errors that never hold a key."""

from __future__ import annotations

import base64

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from delegation.core.codec import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadKeyError,
    PayloadKeyring,
    encrypted_data_converter,
    is_encrypted,
    new_key,
)
from delegation.core.models import DelegationRequest

SECRET_TITLE = "Renew the lease for Jane Roe, 12 Elm Street"


def keyring(*ids: str, active: str | None = None) -> PayloadKeyring:
    return PayloadKeyring(keys={i: new_key() for i in ids}, active_id=active or ids[0])


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


async def test_a_payload_round_trips_and_its_ciphertext_holds_no_plaintext() -> None:
    codec = EncryptionCodec(keyring("k1"))
    [sealed] = await codec.encode([plain(f'"{SECRET_TITLE}"')])
    assert sealed.metadata["encoding"] == ENCRYPTED_ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"k1"
    assert SECRET_TITLE.encode() not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # the inner metadata is sealed too
    [opened] = await codec.decode([sealed])
    assert opened == plain(f'"{SECRET_TITLE}"')


async def test_each_encoding_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec(keyring("k1"))
    first, second = await codec.encode([plain("same"), plain("same")])
    assert first.data != second.data


async def test_after_a_rotation_old_payloads_decode_and_new_ones_use_the_new_key() -> None:
    old = keyring("k1")
    [written_before] = await EncryptionCodec(old).encode([plain("before")])
    rotated = old.with_new_active_key("k2")
    codec = EncryptionCodec(rotated)
    [written_after] = await codec.encode([plain("after")])
    assert written_after.metadata[KEY_ID_METADATA] == b"k2"
    assert await codec.decode([written_before, written_after]) == [plain("before"), plain("after")]


async def test_a_payload_under_an_unknown_key_id_names_the_id() -> None:
    [sealed] = await EncryptionCodec(keyring("k-retired")).encode([plain("x")])
    with pytest.raises(PayloadKeyError, match=r"key id 'k-retired'.*does not hold"):
        await EncryptionCodec(keyring("k-new")).decode([sealed])


async def test_a_tampered_payload_or_another_key_of_the_same_id_fails_authentication() -> None:
    [sealed] = await EncryptionCodec(keyring("k1")).encode([plain("x")])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError, match="failed authentication"):
        await EncryptionCodec(keyring("k1")).decode([sealed])  # same id, another key
    codec = EncryptionCodec(keyring("k1"))
    [mine] = await codec.encode([plain("x")])
    mine.data = mine.data[:-1] + bytes([mine.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError, match="failed authentication"):
        await codec.decode([mine])


async def test_an_unencrypted_payload_decodes_unchanged() -> None:
    assert await EncryptionCodec(keyring("k1")).decode([plain("from a plain client")]) == [plain("from a plain client")]


def test_the_setting_parses_ids_and_keys_and_the_first_is_active() -> None:
    a, b = new_key(), new_key()
    spec = f"2026-12:{base64.urlsafe_b64encode(a).decode()}, 2026-06:{base64.b64encode(b).decode()}"
    parsed = PayloadKeyring.parse(spec)
    assert parsed.active_id == "2026-12"
    assert parsed.keys == {"2026-12": a, "2026-06": b}
    assert PayloadKeyring.parse(spec, "2026-06").active_id == "2026-06"
    assert PayloadKeyring.parse(parsed.to_spec()).keys == parsed.keys


@pytest.mark.parametrize(
    ("spec", "active", "message"),
    [
        ("", None, "empty"),
        ("no-colon", None, "entry 1 is not `id:base64key`"),
        (f"k1:{base64.b64encode(b'short').decode()}", None, "5 bytes; AES-256 needs 32"),
        ("k1:not*base64!", None, "not valid base64"),
        (f"bad id:{base64.b64encode(bytes(32)).decode()}", None, "must be 1-64 characters"),
        (f"k1:{base64.b64encode(bytes(32)).decode()}", "k9", "active payload key id 'k9' is not in the keyring"),
        (f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}", None, "twice"),
    ],
)
def test_a_bad_setting_is_named_without_echoing_key_text(spec: str, active: str | None, message: str) -> None:
    with pytest.raises(PayloadKeyError, match=message) as caught:
        PayloadKeyring.parse(spec, active)
    for _, _, text in (entry.partition(":") for entry in spec.split(",")):
        if len(text) > 4:
            assert text.strip() not in str(caught.value)


def test_a_keyring_never_shows_its_keys() -> None:
    ring = keyring("k1", "k2")
    encoded = [base64.urlsafe_b64encode(k).decode() for k in ring.keys.values()]
    for shown in (repr(ring), str(ring)):
        assert "k1" in shown
        assert not any(e in shown for e in encoded)


async def test_the_converter_encrypts_payloads_and_failure_messages() -> None:
    converter = encrypted_data_converter(keyring("k1"))
    request = DelegationRequest(task_id="T-1", title=SECRET_TITLE)
    [payload] = await converter.encode([request])
    assert is_encrypted([payload])
    assert SECRET_TITLE.encode() not in payload.SerializeToString()
    assert await converter.decode([payload], [DelegationRequest]) == [request]

    failure = Failure()
    await converter.encode_failure(ApplicationError(f"could not decide {SECRET_TITLE}", type="X"), failure)
    assert SECRET_TITLE not in failure.SerializeToString().decode("latin-1")
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert SECRET_TITLE in str(decoded)
