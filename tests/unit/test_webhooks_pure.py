"""Webhook signing against the reference library, event choice, backoff."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from voxfleet.webhooks.dispatcher import MAX_BACKOFF_S, backoff_s
from voxfleet.webhooks.events import event_for
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


def session(state: str, reason: str | None = None) -> dict:
    return {"sessionId": "s", "agent": "a", "transport": "webrtc", "createdAt": 100.0, "endedAt": 130.5,
            "state": state, "endReason": reason, "endDetail": None, "start": "warm", "botStartMs": 5.0,
            "latency": {"ttfwMs": 280.0, "turnsV2vMs": [900.0], "v2vP50Ms": 900.0, "ttfbP50Ms": {}},
            "transcript": [{"role": "bot", "text": "Hi", "at": 100.3}]}


def test_event_choice():
    assert event_for(session("starting"), False) is None
    assert event_for(session("active"), False)[0] == "session.started"
    assert event_for(session("active"), True) is None
    kind, payload = event_for(session("ended", "hangup"), True)
    assert kind == "session.ended" and payload["durationS"] == 30.5 and payload["turnsV2vMs"] == [900.0]
    assert event_for(session("ended", "crashed"), True)[0] == "session.failed"


def test_backoff_grows_and_is_capped():
    assert 0.8 <= backoff_s(1) <= 1.2 and 3.2 <= backoff_s(3) <= 4.8
    assert backoff_s(50) <= MAX_BACKOFF_S * 1.2
