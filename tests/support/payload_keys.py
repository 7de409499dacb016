"""The test session's payload keyring: random per session, held by the test client and every worker subprocess."""

from __future__ import annotations

from delegation.core.codec import PayloadKeyring, new_key

TEST_KEY_ID = "test-session"
TEST_KEYRING = PayloadKeyring(keys={TEST_KEY_ID: new_key()}, active_id=TEST_KEY_ID)
