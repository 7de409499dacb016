"""`delegation keys` and the codec-server command's refusals, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from delegation.cli.main import app
from delegation.core.codec import PayloadKeyring, encode_key
from tests.support.payload_keys import TEST_KEYRING

runner = CliRunner()


def test_keys_new_prints_a_setting_that_parses_and_add_to_current_keeps_the_old_keys() -> None:
    fresh = runner.invoke(app, ["keys", "new", "--key-id", "k-next"])
    assert fresh.exit_code == 0, fresh.output
    name, _, spec = fresh.output.strip().partition("=")
    assert name == "PAYLOAD_ENCRYPTION_KEYS"
    assert PayloadKeyring.parse(spec).key_ids == ["k-next"]

    added = runner.invoke(app, ["keys", "new", "--key-id", "k-next", "--add-to-current"])
    ring = PayloadKeyring.parse(added.output.strip().partition("=")[2])
    assert ring.active_id == "k-next" and set(ring.keys) == {"k-next", *TEST_KEYRING.keys}
    assert ring.keys[TEST_KEYRING.active_id] == TEST_KEYRING.keys[TEST_KEYRING.active_id]


def test_keys_show_lists_ids_never_keys() -> None:
    shown = runner.invoke(app, ["keys", "show"])
    assert shown.exit_code == 0, shown.output
    assert TEST_KEYRING.active_id in shown.output and "PAYLOAD_ENCRYPTION_KEYS" in shown.output
    assert not [k for k in TEST_KEYRING.keys.values() if encode_key(k) in shown.output]


def test_rotate_is_refused_when_the_keys_come_from_the_setting() -> None:
    refused = runner.invoke(app, ["keys", "rotate"])
    assert refused.exit_code == 2
    assert "--add-to-current" in refused.output


def test_rotate_on_the_dev_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PAYLOAD_ENCRYPTION_KEYS")
    monkeypatch.setenv("APP_ENV", "dev")
    first = runner.invoke(app, ["keys", "rotate", "--key-id", "k-two"])
    assert first.exit_code == 0, first.output
    assert "active payload key: k-two" in first.output
    assert (tmp_path / "data" / "payload_keys.json").exists()


def test_a_bad_setting_is_a_clean_error() -> None:
    result = runner.invoke(app, ["keys", "show"], env={"PAYLOAD_ENCRYPTION_KEYS": "k1:short"})
    assert result.exit_code == 1
    assert "PAYLOAD_ENCRYPTION_KEYS: payload key 'k1'" in result.output and "Traceback" not in result.output
