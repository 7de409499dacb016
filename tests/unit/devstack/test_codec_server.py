"""The codec server over HTTP on loopback: Temporal's protocol, CORS for the Web UI's origin only."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from delegation.core.codec import EncryptionCodec, PayloadKeyring, new_key
from tests.support.loopback import codec_server

UI_ORIGIN = "http://127.0.0.1:8233"
KEYRING = PayloadKeyring(keys={"k1": new_key()}, active_id="k1")


@pytest_asyncio.fixture
async def codec_url() -> AsyncIterator[str]:
    async with codec_server(KEYRING, [UI_ORIGIN]) as url:
        yield url


def _body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=list(payloads)))


def _payloads(text: str) -> list[Payload]:
    return list(json_format.Parse(text, Payloads()).payloads)


async def test_decode_returns_the_plaintext_and_encode_the_ciphertext(codec_url: str) -> None:
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"title": "Renew the lease"}')
    sealed = EncryptionCodec(KEYRING).encrypt(original)
    async with httpx.AsyncClient(trust_env=False) as http:
        decoded = await http.post(f"{codec_url}/decode", content=_body(sealed), headers={"X-Namespace": "default"})
        assert decoded.status_code == 200
        assert _payloads(decoded.text) == [original]
        # Only the last path segment counts: the CLI's `{namespace}` form works too.
        nested = await http.post(f"{codec_url}/default/decode", content=_body(sealed))
        assert _payloads(nested.text) == [original]
        encoded = await http.post(f"{codec_url}/encode", content=_body(original))
        [again] = _payloads(encoded.text)
        assert again.metadata["encoding"] == b"binary/encrypted"
        assert EncryptionCodec(KEYRING).decrypt(again) == original
    assert base64.b64encode(b"Renew").decode() not in _body(sealed)


async def test_the_web_ui_origin_gets_cors_headers_and_others_are_refused(codec_url: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    async with httpx.AsyncClient(trust_env=False) as http:
        allowed = await http.options(f"{codec_url}/decode", headers={"Origin": UI_ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
        assert "x-namespace" in allowed.headers["access-control-allow-headers"]
        posted = await http.post(f"{codec_url}/decode", content=_body(), headers={"Origin": UI_ORIGIN})
        assert posted.headers["access-control-allow-origin"] == UI_ORIGIN

        other = "http://evil.example:8233"
        refused = await http.options(f"{codec_url}/decode", headers={"Origin": other, **preflight})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        sealed = EncryptionCodec(KEYRING).encrypt(Payload(data=b"secret"))
        stolen = await http.post(f"{codec_url}/decode", content=_body(sealed), headers={"Origin": other})
        assert stolen.status_code == 403
        assert b"secret" not in stolen.content


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not a Payloads JSON"),
        (_body(EncryptionCodec(PayloadKeyring(keys={"gone": new_key()}, active_id="gone")).encrypt(Payload())), "gone"),
    ],
    ids=["bad-json", "unknown-key"],
)
async def test_a_bad_request_is_a_400_that_says_why(codec_url: str, body: str, message: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.post(f"{codec_url}/decode", content=body)
    assert answer.status_code == 400
    assert message in answer.text
