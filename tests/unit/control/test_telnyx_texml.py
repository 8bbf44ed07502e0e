"""Telnyx's routes without a server (control/telnyx.py): the TeXML each answer renders, read back
as the Telnyx-protocol caller reads it, and webhooks refused without the carrier's credentials."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from voxfleet.bench.telnyx_caller import LOCAL_ACCOUNT, TelnyxCaller, stream_attributes
from voxfleet.bench.twilio_caller import parse_twiml
from voxfleet.config import load_settings
from voxfleet.control import telnyx
from voxfleet.exceptions import ConfigError, TelephonySignatureInvalid
from voxfleet.transports.stream_tokens import StreamTokens
from voxfleet.transports.telnyx_auth import SeenSignatures


def settings(monkeypatch, **values):
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    for name in ("TELNYX_PUBLIC_KEY", "TELNYX_API_KEY"):  # the credentials are the test's to give
        monkeypatch.delenv(name, raising=False)
    return load_settings(**values)


def request(body: bytes = b"", headers: dict[str, str] | None = None) -> Request:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/telephony/telnyx/support", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "server": ("voice.example.com", 443), "scheme": "https", "root_path": ""}
    return Request(scope, receive)


def app_state(config) -> SimpleNamespace:
    service = SimpleNamespace(get=lambda session_id: SimpleNamespace(agent="support"))
    return SimpleNamespace(settings=config, service=service, tokens=StreamTokens(b"k" * 32, 30),
                           telnyx_seen=SeenSignatures(), call_sessions={})


def test_connect_hold_and_goodbye_render_texml_telnyx_reads(monkeypatch):
    config = settings(monkeypatch, public_url="https://voice.example.com", telephony={"hold_check_s": 3})
    state = app_state(config)
    answer = parse_twiml(telnyx.connect_stream(state, request(), "S1").body.decode())
    assert answer.stream_url == "wss://voice.example.com/v1/telephony/telnyx/stream"
    assert stream_attributes(answer) == {"url": answer.stream_url, "track": "inbound_track", "codec": "PCMU",
                                         "bidirectionalMode": "rtp", "bidirectionalCodec": "PCMU"}
    assert answer.parameters["session"] == "S1" and state.tokens.consume(answer.parameters["token"]) == "S1"
    # Telnyx's <Connect> has no action: the verb after it runs once the stream stops
    assert answer.redirect == "https://voice.example.com/v1/telephony/telnyx/support/ended?session=S1"

    held = parse_twiml(telnyx.hold(config, request(), "support", say_busy=True, query="attempt=1").body.decode())
    assert held.says == [config.telephony.busy_message] and held.pause_s == 3
    assert held.redirect == "https://voice.example.com/v1/telephony/telnyx/support?attempt=1" and not held.hangup
    assert parse_twiml(telnyx.hold(config, request(), "support", say_busy=False, query="q").body.decode()).says == []

    bye = parse_twiml(telnyx.goodbye("Goodbye & thanks <3").body.decode())
    assert bye.says == ["Goodbye & thanks <3"] and bye.hangup  # escaped as XML
    assert parse_twiml(telnyx.goodbye(None).body.decode()).says == []


@pytest.mark.parametrize("values, missing", [
    ({}, "TELNYX_PUBLIC_KEY"),
    ({"telnyx_public_key": LOCAL_ACCOUNT.public_key}, "TELNYX_API_KEY"),  # Pipecat's serializer needs it
    ({"telnyx_api_key": LOCAL_ACCOUNT.api_key}, "TELNYX_PUBLIC_KEY"),
])
def test_webhooks_are_refused_without_the_carriers_credentials(monkeypatch, values, missing):
    state = app_state(settings(monkeypatch, **values))
    body, headers = TelnyxCaller("http://x").signed({"CallSid": "v3:a"})
    with pytest.raises(TelephonySignatureInvalid, match=f"refused: {missing} is not configured"):
        asyncio.run(telnyx.signed_form(state, request(body, headers)))


def test_a_signed_webhook_yields_its_form_fields(monkeypatch):
    state = app_state(settings(monkeypatch, **LOCAL_ACCOUNT.env))
    caller = TelnyxCaller("http://x")
    body, headers = caller.signed(caller.call_params("v3:a"))
    assert asyncio.run(telnyx.signed_form(state, request(body, headers)))["CallSid"] == "v3:a"


def test_a_public_key_setting_that_is_not_one_fails_at_start(monkeypatch):
    with pytest.raises(ConfigError, match="TELNYX_PUBLIC_KEY decodes to 3 bytes"):
        settings(monkeypatch, telnyx_public_key="YWJj")
