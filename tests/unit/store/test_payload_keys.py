"""delegation.store.payload_keys: the keyring from the setting, or the development key file."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from delegation.core.codec import PayloadKeyError, PayloadKeyring, new_key
from delegation.core.settings import PROJECT_ROOT, Settings
from delegation.store.payload_keys import keyring_for, rotate_key_file


@pytest.fixture(autouse=True)
def no_keys_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYLOAD_ENCRYPTION_KEYS", raising=False)


def settings(tmp_path: Path, **values: object) -> Settings:
    values = {"APP_ENV": "dev", **values}
    return Settings(_env_file=None, DATA_DIR=tmp_path, **values)  # type: ignore[call-arg]


def test_development_creates_one_private_key_file_and_reuses_it(tmp_path: Path) -> None:
    first = keyring_for(settings(tmp_path))
    path = settings(tmp_path).payload_key_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyring_for(settings(tmp_path)).keys == first.keys
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    probe = (
        "import hashlib, sys\n"
        "from delegation.core.settings import Settings\n"
        "from delegation.store.payload_keys import keyring_for\n"
        "ring = keyring_for(Settings(_env_file=None, DATA_DIR=sys.argv[1], APP_ENV='dev'))\n"
        "print(hashlib.sha256(ring.keys[ring.active_id]).hexdigest())\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", probe, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT
        )
        for _ in range(4)
    ]
    digests = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert all(p.returncode == 0 for p in processes)
    ring = keyring_for(settings(tmp_path))
    assert digests == {hashlib.sha256(ring.keys[ring.active_id]).hexdigest()}


def test_the_setting_wins_and_other_environments_require_it(tmp_path: Path) -> None:
    ring = PayloadKeyring(keys={"prod-1": new_key()}, active_id="prod-1")
    got = keyring_for(settings(tmp_path, APP_ENV="prod", PAYLOAD_ENCRYPTION_KEYS=ring.to_spec()))
    assert got.keys == ring.keys
    assert not settings(tmp_path).payload_key_file.exists()
    with pytest.raises(PayloadKeyError, match="PAYLOAD_ENCRYPTION_KEYS is not set: APP_ENV=prod"):
        keyring_for(settings(tmp_path, APP_ENV="prod"))


def test_a_bad_setting_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PayloadKeyError, match=r"^PAYLOAD_ENCRYPTION_KEYS: payload key entry 1"):
        keyring_for(settings(tmp_path, PAYLOAD_ENCRYPTION_KEYS="garbage"))


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"{}", b'{"active": "a", "keys": {"a": "c2hvcnQ="}}'])
def test_a_broken_key_file_names_the_file_and_is_left_alone(tmp_path: Path, content: bytes) -> None:
    path = settings(tmp_path).payload_key_file
    path.write_bytes(content)
    with pytest.raises(PayloadKeyError, match=str(path)):
        keyring_for(settings(tmp_path))
    assert path.read_bytes() == content


def test_rotation_adds_an_active_key_and_keeps_the_old_ones(tmp_path: Path) -> None:
    before = keyring_for(settings(tmp_path))
    after = rotate_key_file(settings(tmp_path), "k-next")
    assert after.active_id == "k-next"
    assert set(after.keys) == {*before.keys, "k-next"}
    reread = keyring_for(settings(tmp_path))
    assert reread.active_id == "k-next" and reread.keys == after.keys
    assert json.loads(settings(tmp_path).payload_key_file.read_text())["active"] == "k-next"
    assert stat.S_IMODE(settings(tmp_path).payload_key_file.stat().st_mode) == 0o600
