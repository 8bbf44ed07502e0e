"""Webhook signing (webhooks/signing.py), against the reference library."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from voxfleet.webhooks.signing import headers, new_secret, secret_bytes


def test_signature_verifies_with_the_reference_library():
    secret, body = new_secret(), b'{"type":"session.ended"}'
    signed = headers(secret, "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, signed) == {"type": "session.ended"}
    with pytest.raises(Exception):
        Webhook(new_secret()).verify(body, signed)


def test_bad_secret_is_named():
    with pytest.raises(ValueError, match="webhook_secret"):
        secret_bytes("whsec_***")
