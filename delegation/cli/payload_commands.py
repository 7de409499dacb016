"""``delegation codec-server`` and ``delegation keys``: the payload encryption's operator commands."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from delegation.core.codec import PayloadKeyError, PayloadKeyring, new_key
from delegation.core.settings import get_settings
from delegation.store.payload_keys import KEYS_SETTING, keyring_for, new_key_id, rotate_key_file

keys_app = typer.Typer(help="The payload keyring that encrypts what Temporal stores.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _keyring() -> PayloadKeyring:
    try:
        return keyring_for(get_settings())
    except PayloadKeyError as err:
        _fail(str(err))


def codec_server_command(
    port: Annotated[int | None, typer.Option(help="Port (default CODEC_SERVER_PORT, 8234).")] = None,
) -> None:
    """Serve Temporal's codec-server protocol with this keyring on BIND_HOST, for the Web UI and the CLI."""
    from delegation.devstack.codec_server import serve

    settings = get_settings()
    keyring = _keyring()
    port = port or settings.codec_server_port
    console.print(
        f"codec server on http://{settings.bind_host}:{port} (keys {', '.join(keyring.key_ids)}, "
        f"active {keyring.active_id}); browsers allowed from {', '.join(settings.ui_origins)}"
    )
    console.print(
        f"CLI: temporal workflow show -w <id> --codec-endpoint http://{settings.bind_host}:{port}", highlight=False
    )
    serve(keyring, settings.ui_origins, settings.bind_host, port)


@keys_app.command("show")
def keys_show() -> None:
    """The key ids in the keyring and which one encrypts (never the keys)."""
    settings = get_settings()
    keyring = _keyring()
    table = Table("key id", "active")
    for key_id in keyring.key_ids:
        table.add_row(key_id, "yes" if key_id == keyring.active_id else "")
    console.print(table)
    source = KEYS_SETTING if settings.payload_encryption_keys is not None else str(settings.payload_key_file)
    console.print(f"from {source}")


@keys_app.command("new")
def keys_new(
    key_id: Annotated[str | None, typer.Option(help="Id of the new key (default: k<date>-<time>).")] = None,
    add_to_current: Annotated[
        bool, typer.Option(help="Print the current keyring with the new key added (active), ready to deploy.")
    ] = False,
) -> None:
    """Print a PAYLOAD_ENCRYPTION_KEYS value with a new random key (a secret: put it in your secret store)."""
    key_id = key_id or new_key_id()
    try:
        keyring = (
            _keyring().with_new_active_key(key_id)
            if add_to_current
            else PayloadKeyring(keys={key_id: new_key()}, active_id=key_id)
        )
    except PayloadKeyError as err:
        _fail(str(err), 2)
    print(f"{KEYS_SETTING}={keyring.to_spec()}")


@keys_app.command("rotate")
def keys_rotate(key_id: Annotated[str | None, typer.Option(help="Id of the new key.")] = None) -> None:
    """Development key file: add a new active key; older keys stay so older histories still decode."""
    settings = get_settings()
    if settings.payload_encryption_keys is not None:
        _fail(
            f"the keyring comes from {KEYS_SETTING}: deploy the output of `delegation keys new --add-to-current` "
            "to every host (as an inactive key first, then active)",
            2,
        )
    try:
        keyring = rotate_key_file(settings, key_id)
    except PayloadKeyError as err:
        _fail(str(err), 2)
    console.print(f"active payload key: {keyring.active_id} (keys {', '.join(keyring.key_ids)}); restart the stack")
