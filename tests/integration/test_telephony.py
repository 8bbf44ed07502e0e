"""Twilio's voice webhook against a real service (signatures, TwiML for connect, hold and goodbye),
and the media WebSockets' refusals. Streams themselves run in tests/e2e/test_telephony.py."""

from __future__ import annotations

import itertools

import asyncio
import dataclasses
import xml.etree.ElementTree as ET

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_AUTH_TOKEN
from tests.integration.conftest import small_service, wait_ended
from voxfleet.control.app import build_app

CALL = {"CallSid": "CA" + "2" * 32, "AccountSid": "AC" + "1" * 32, "From": "+15550001111", "To": "+15550002222",
        "Direction": "inbound"}


CALL_SIDS = itertools.count(1)


def caller(number: str) -> dict[str, str]:
    """The webhook's form of a call from `number` (each calling number is one client)."""
    return {**CALL, "From": number, "CallSid": "CA" + number.strip("+").rjust(32, "0")}


async def voice(http, path: str, params: dict[str, str] | None = None, *, sign: bool = True):
    """POST Twilio's voice webhook as Twilio does: form-encoded, signed over the full URL."""
    params = {**CALL, "CallSid": f"CA{next(CALL_SIDS):032d}"} if params is None else params  # a new call
    headers = {}
    if sign:
        headers["X-Twilio-Signature"] = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
            f"http://testserver{path}", params)
    return await http.post(path, data=params, headers=headers)


def verbs(reply) -> list[tuple[str, dict[str, str], str]]:
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/xml", reply.text
    root = ET.fromstring(reply.text)
    assert root.tag == "Response"
    return [(verb.tag, verb.attrib, (verb.text or "").strip()) for verb in root]


async def test_unsigned_or_missigned_webhooks_are_refused(live):
    async with live.client() as http:
        reply = await voice(http, "/v1/telephony/twilio/tone", sign=False)
        assert reply.status_code == 403
        assert reply.json() == {"error": "X-Twilio-Signature header missing", "code": "SIGNATURE_INVALID"}
        reply = await http.post("/v1/telephony/twilio/tone", data=CALL, headers={"X-Twilio-Signature": "c2lnbmVk"})
        assert reply.status_code == 403
        assert "does not match this request to http://testserver/v1/telephony/twilio/tone" in reply.json()["error"]
        # signed for another URL (a query added on the way)
        signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
            "http://testserver/v1/telephony/twilio/tone", CALL)
        reply = await http.post("/v1/telephony/twilio/tone?region=eu", data=CALL,
                                headers={"X-Twilio-Signature": signature})
        assert reply.status_code == 403 and reply.json()["code"] == "SIGNATURE_INVALID"

    state = live.app.state.voxfleet
    unconfigured = build_app(dataclasses.replace(
        state, settings=state.settings.model_copy(update={"twilio_auth_token": None})))
    async with live.client(app=unconfigured) as http:
        reply = await voice(http, "/v1/telephony/twilio/tone")
        assert reply.status_code == 403
        assert reply.json() == {"error": "Twilio webhooks are refused: TWILIO_AUTH_TOKEN is not configured",
                                "code": "SIGNATURE_INVALID"}


async def test_signed_webhooks_with_bad_fields_are_400(live):
    async with live.client() as http:
        reply = await voice(http, "/v1/telephony/twilio/tone", {"From": "+15550001111"})
        assert reply.status_code == 400 and reply.json()["field"] == "CallSid"
        reply = await voice(http, "/v1/telephony/twilio/tone?attempt=again")
        assert reply.status_code == 400 and reply.json()["field"] == "attempt"
        reply = await voice(http, "/v1/telephony/twilio/nope")
        assert reply.status_code == 404 and reply.json()["code"] == "AGENT_NOT_FOUND"


async def test_a_call_is_answered_with_a_stream_to_its_session(live):
    async with live.client() as http:  # Twilio's signature is the key: no API key needed
        reply = await voice(http, "/v1/telephony/twilio/tone")
    assert [verb for verb, _, _ in verbs(reply)] == ["Connect"]
    stream = ET.fromstring(reply.text).find("Connect/Stream")
    assert stream is not None and stream.attrib["url"] == "ws://testserver/v1/telephony/twilio/stream"
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert set(parameters) == {"session", "token"} and parameters["token"].startswith(parameters["session"] + ".")
    record = live.service.get(parameters["session"]).to_public()
    assert record["transport"] == "twilio" and record["agent"] == "tone"
    await live.service.hang_up(parameters["session"])
    assert (await wait_ended(live.service, parameters["session"]))["state"] == "ended"


async def test_calls_no_node_can_take_or_no_longer_held_are_told_goodbye(live):
    goodbye = live.settings.telephony.goodbye_message
    async with live.client() as http:
        assert verbs(await voice(http, "/v1/telephony/twilio/tone?region=mars")) == [
            ("Say", {}, goodbye), ("Hangup", {}, "")]
        assert verbs(await voice(http, "/v1/telephony/twilio/tone?session=gone")) == [
            ("Say", {}, goodbye), ("Hangup", {}, "")]


async def test_a_busy_line_holds_the_caller_until_a_bot_is_free(live, tmp_path):
    tel = live.settings.telephony
    hold = str(tel.hold_check_s)
    async with small_service(live, tmp_path, queue_max=1) as (small, app):
        async with live.client(app=app) as http:
            first = ET.fromstring((await voice(http, "/v1/telephony/twilio/tone", caller("+15550001"))).text)
            first_session = first.find("Connect/Stream/Parameter[@name='session']").attrib["value"]
            # the only bot is taken: the next call waits in the queue, hearing the busy message
            held = verbs(await voice(http, "/v1/telephony/twilio/tone?region=local", caller("+15550002")))
            assert [v[0] for v in held] == ["Say", "Pause", "Redirect"]
            assert held[0][2] == tel.busy_message and held[1][1] == {"length": hold}
            redirect = held[2][2]
            assert redirect.startswith("http://testserver/v1/telephony/twilio/tone?session=")
            assert redirect.endswith("&region=local") and held[2][1] == {"method": "POST"}
            waiting = redirect.split("session=")[1].split("&")[0]
            assert small.get(waiting).to_public()["state"] == "queued"
            # the queue is full too: a third caller holds by attempts, told the busy message once
            busy = verbs(await voice(http, "/v1/telephony/twilio/tone", caller("+15550003")))
            assert [v[0] for v in busy] == ["Say", "Pause", "Redirect"]
            assert busy[2][2] == "http://testserver/v1/telephony/twilio/tone?attempt=1"
            again = verbs(await voice(http, "/v1/telephony/twilio/tone?attempt=1", caller("+15550003")))
            assert [v[0] for v in again] == ["Pause", "Redirect"]
            # Twilio comes back to check: still queued, so hold on, silently
            path = redirect.removeprefix("http://testserver")
            assert [v[0] for v in verbs(await voice(http, path))] == ["Pause", "Redirect"]
            # the first call ends: the waiting one gets the bot, and its next check connects it
            await small.hang_up(first_session)
            await wait_ended(small, first_session)
            for _ in range(100):
                if small.get(waiting).state != "queued":
                    break
                await asyncio.sleep(0.05)
            connected = ET.fromstring((await voice(http, path)).text)
            assert connected.find("Connect/Stream/Parameter[@name='session']").attrib["value"] == waiting
            await small.hang_up(waiting)
            assert (await wait_ended(small, waiting))["state"] == "ended"


def test_media_websockets_refuse_bad_tokens(live):
    """The refusals never reach the service, so Starlette's TestClient (its own thread and loop) can open them."""
    state = live.app.state.voxfleet
    client = TestClient(live.app)
    for path, headers, code, reason in [
        ("/v1/ws", {}, 4003, "STREAM_TOKEN_INVALID: stream token missing"),
        ("/v1/ws?token=a.b.c.d", {}, 4003, "STREAM_TOKEN_INVALID: stream token forged or from another server"),
        ("/v1/ws/a.b.c", {}, 4003, "STREAM_TOKEN_INVALID: stream token malformed"),
        ("/v1/ws", {"Authorization": "Bearer x.y.z.w"}, 4003,
         "STREAM_TOKEN_INVALID: stream token forged or from another server"),
        (f"/v1/ws?token={state.tokens.mint('nobody')}", {}, 1008, "STREAM_REJECTED: sessionId: no session 'nobody'"),
        ("/v1/telephony/twilio/stream", {}, 1007, "STREAM_PROTOCOL_ERROR: frame: not JSON (or nested too deeply) (got 'hello')"),
    ]:
        with client.websocket_connect(path, headers=headers) as ws:
            if path.startswith("/v1/telephony"):
                ws.send_text("hello")
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert (closed.value.code, closed.value.reason) == (code, reason), path


async def test_a_replayed_webhook_starts_no_second_session(live):
    """The same signed webhook (same CallSid) again: the call's one session is offered again while
    its stream has not connected, then the replay gets only a goodbye; never a second session."""
    params = caller("+15550009")
    async with live.client() as http:
        first = ET.fromstring((await voice(http, "/v1/telephony/twilio/tone", params)).text)
        session_id = first.find("Connect/Stream/Parameter[@name='session']").attrib["value"]
        before = set(live.service.table.live)
        again = ET.fromstring((await voice(http, "/v1/telephony/twilio/tone", params)).text)
        assert again.find("Connect/Stream/Parameter[@name='session']").attrib["value"] == session_id
        assert set(live.service.table.live) <= before  # nothing new started
        await live.service.hang_up(session_id)
        await wait_ended(live.service, session_id)
        goodbye = live.settings.telephony.goodbye_message
        assert verbs(await voice(http, "/v1/telephony/twilio/tone", params)) == [
            ("Say", {}, goodbye), ("Hangup", {}, "")]
        assert set(live.service.table.live) <= before  # and still nothing new
