"""Which webhook event a session's record gives (webhooks/events.py)."""

from __future__ import annotations

from voxfleet.webhooks.events import event_for


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


def test_a_phone_calls_end_carries_its_call_and_a_transfer_says_where():
    call = {"carrier": "twilio", "direction": "outbound", "carrierCallId": "CA1", "status": "answered",
            "transfer": {"to": "+15005550999", "at": 120.0}, "timeline": [{"status": "answered", "at": 101.0}]}
    kind, payload = event_for({**session("ended", "transferred"), "endDetail": "to +15005550999", "call": call}, True)
    assert kind == "session.ended" and payload["endReason"] == "transferred"
    assert payload["call"]["transfer"]["to"] == "+15005550999" and payload["endDetail"] == "to +15005550999"
    assert "call" not in event_for(session("ended", "hangup"), True)[1]  # a WebRTC session has none
