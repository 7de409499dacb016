"""Where the payload keyring comes from: the ``PAYLOAD_ENCRYPTION_KEYS`` setting, or in development a key file.

Every client and worker of one deployment must hold the same keys: set the setting on each
host (from a secret store). For the local stack, where every process shares ``DATA_DIR``,
the first process to need a key creates ``data/payload_keys.json`` (mode 0600, linked into
place so two processes starting at once agree on one key) and every later one reads it.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delegation.core.codec import PayloadKeyError, PayloadKeyring, decode_key, encode_key, new_key
from delegation.core.settings import Settings
from delegation.store.files import write_atomically

KEYS_SETTING = "PAYLOAD_ENCRYPTION_KEYS"


def new_key_id(now: datetime | None = None) -> str:
    """A key id that sorts by creation time, e.g. ``k20261203-141500``."""
    return (now or datetime.now(UTC)).strftime("k%Y%m%d-%H%M%S")


def keyring_for(settings: Settings) -> PayloadKeyring:
    """The keyring this process encrypts and decrypts Temporal payloads with.

    Raises ``PayloadKeyError`` naming the setting or the file, never a key.
    """
    if settings.payload_encryption_keys is not None:
        try:
            return PayloadKeyring.parse(
                settings.payload_encryption_keys.get_secret_value(), settings.payload_encryption_key_id
            )
        except PayloadKeyError as err:
            raise PayloadKeyError(f"{KEYS_SETTING}: {err}") from None
    if not settings.is_development:
        raise PayloadKeyError(
            f"{KEYS_SETTING} is not set: APP_ENV={settings.app_env} needs the keyring every client and worker "
            "shares (`delegation keys new` prints one)"
        )
    path = settings.payload_key_file
    if not path.exists():
        first_id = new_key_id()
        keyring = PayloadKeyring(keys={first_id: new_key()}, active_id=first_id)
        # Linked into place: when another process created it first, use that one.
        with contextlib.suppress(FileExistsError):
            write_atomically(path, lambda handle: handle.write(_file_text(keyring)), exclusive=True)
    keyring = _read_key_file(path)
    if settings.payload_encryption_key_id and settings.payload_encryption_key_id != keyring.active_id:
        return PayloadKeyring(keys=keyring.keys, active_id=settings.payload_encryption_key_id)
    return keyring


def rotate_key_file(settings: Settings, key_id: str | None = None) -> PayloadKeyring:
    """Development: add a new active key to the key file; the old keys stay to read older histories."""
    keyring = keyring_for(settings).with_new_active_key(key_id or new_key_id())
    write_atomically(settings.payload_key_file, lambda handle: handle.write(_file_text(keyring)))
    return keyring


def _file_text(keyring: PayloadKeyring) -> bytes:
    document = {"active": keyring.active_id, "keys": {k: encode_key(v) for k, v in keyring.keys.items()}}
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _read_key_file(path: Path) -> PayloadKeyring:
    try:
        document: Any = json.loads(path.read_bytes().decode("utf-8"))
        keys = {str(k): decode_key(str(v), str(k)) for k, v in document["keys"].items()}
        return PayloadKeyring(keys=keys, active_id=str(document["active"]))
    except OSError as err:
        raise PayloadKeyError(f"cannot read the payload key file {path}: {err.strerror}") from None
    except PayloadKeyError as err:
        raise PayloadKeyError(f"the payload key file {path}: {err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise PayloadKeyError(
            f"the payload key file {path} is not a keyring ({{'active': id, 'keys': {{id: base64}}}})"
        ) from None
