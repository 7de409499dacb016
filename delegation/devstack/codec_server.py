"""A Temporal codec server: ``POST …/decode`` and ``POST …/encode`` with the service's keyring, on loopback.

The Web UI (started with ``--ui-codec-endpoint``) and ``temporal workflow show
--codec-endpoint`` send the encrypted payloads of a history here and show what comes back,
so an operator reads decisions while Temporal stores only ciphertext. The protocol is
Temporal's: a ``Payloads`` protobuf as JSON in, the same out; only the last path segment
counts. Browsers are answered only from the Web UI's own origins (CORS); anything that
can reach the port can decode, so it binds to ``BIND_HOST`` (127.0.0.1 by default) and
belongs behind the same access control as the UI itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payloads

from delegation.core.codec import EncryptionCodec, PayloadKeyError, PayloadKeyring

# A history's payloads can reach Temporal's 2 MB limit; base64 adds a third.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
ALLOWED_HEADERS = "content-type,x-namespace,authorization"


def build_app(keyring: PayloadKeyring, ui_origins: Iterable[str]) -> web.Application:
    """The aiohttp application; ``ui_origins`` are the browser origins allowed to call it."""
    codec = EncryptionCodec(keyring)
    origins = frozenset(ui_origins)

    def with_cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin in origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.VARY] = "Origin"
        return response

    async def preflight(request: web.Request) -> web.StreamResponse:
        if request.headers.get(hdrs.ORIGIN) not in origins:
            return web.Response(status=403, text="origin not allowed")
        return with_cors(request, web.Response())

    def handler(transform: Callable[[Payloads], Awaitable[Payloads]]) -> Callable[..., Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get(hdrs.ORIGIN)
            if origin is not None and origin not in origins:
                return web.Response(status=403, text="origin not allowed")
            try:
                payloads = json_format.Parse(await request.read(), Payloads())
            except (json_format.ParseError, DecodeError, UnicodeDecodeError):
                return with_cors(request, web.Response(status=400, text="the body is not a Payloads JSON"))
            try:
                result = await transform(payloads)
            except PayloadKeyError as err:
                return with_cors(request, web.Response(status=400, text=str(err)))
            body = json_format.MessageToJson(result)
            return with_cors(request, web.Response(text=body, content_type="application/json"))

        return handle

    async def decode(payloads: Payloads) -> Payloads:
        return Payloads(payloads=await codec.decode(payloads.payloads))

    async def encode(payloads: Payloads) -> Payloads:
        return Payloads(payloads=await codec.encode(payloads.payloads))

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    # Only the last segment counts (the protocol): /decode, /default/decode, /api/v1/decode all work.
    app.router.add_route("POST", r"/{prefix:.*}decode", handler(decode))
    app.router.add_route("POST", r"/{prefix:.*}encode", handler(encode))
    app.router.add_route("OPTIONS", r"/{prefix:.*}", preflight)
    return app


def serve(keyring: PayloadKeyring, ui_origins: Iterable[str], host: str, port: int) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    web.run_app(build_app(keyring, ui_origins), host=host, port=port, print=None, access_log=None)


def main() -> None:
    """``python -m delegation.devstack.codec_server``: the stack's background codec server, from the settings."""
    from delegation.core.settings import get_settings
    from delegation.store.payload_keys import keyring_for

    settings = get_settings()
    print(f"codec server on {settings.codec_server_url} for {', '.join(settings.ui_origins)}", flush=True)
    serve(keyring_for(settings), settings.ui_origins, settings.bind_host, settings.codec_server_port)


if __name__ == "__main__":
    main()
