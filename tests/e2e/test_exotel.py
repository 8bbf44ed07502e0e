"""Phone calls as Exotel places them through an App Bazaar flow (the Voicebot applet's dynamic URL
and stream, then Passthru, Greeting and Hangup applets), against real `voxfleet serve` processes:
the model-free tone bot, and a spoken conversation with the offline assistant."""

import asyncio
import base64
import json
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import EXOTEL_ENV, Server, wait_for
from voxfleet.bench.exotel_caller import ExotelCaller
from voxfleet.bench.speech import speak, transcribe
from voxfleet.bench.twilio_caller import WebhookRefused
from voxfleet.config import TelephonySettings
from voxfleet.transports.exotel_auth import basic_authorization
from voxfleet.transports.stream_tokens import StreamTokens

pytestmark = pytest.mark.e2e

TONE_BOT = str(Path(__file__).parents[2] / "src/voxfleet/bots/tone.py")
KEY, TOKEN = EXOTEL_ENV["EXOTEL_API_KEY"], EXOTEL_ENV["EXOTEL_API_TOKEN"]
SECRET = "stream-token-secret-for-exotel-tests"
ENV = {**EXOTEL_ENV, "VOXFLEET_TELEPHONY__STREAM_TOKEN_SECRET": SECRET}
SETTINGS = TelephonySettings()
STAY = [np.zeros(8000 * 20, np.int16)]
NO_WARM_POOL = json.dumps([{"name": "tone", "bot": TONE_BOT, "min_warm": 0, "warm_pct": 0, "pool_policy": "fixed"}])  # a caller who stays on the line, silent, for 20 s


@pytest.fixture(scope="module")
def server():
    server = Server("--dev", "--bot", TONE_BOT, env={**ENV, "VOXFLEET_IDLE_TIMEOUT_S": "5"})
    yield server
    server.stop()


def caller_of(server: Server, token: str = TOKEN) -> ExotelCaller:
    return ExotelCaller(server.url, KEY, token, account_sid="exotel-test-account")


async def record_of(server: Server, session_id: str, state: str = "ended", timeout: float = 10) -> dict:
    def poll() -> dict:
        with server.client() as http:
            return wait_for(lambda: (r := http.get(f"/v1/sessions/{session_id}").json())["state"] == state and r,
                            timeout)
    return await asyncio.to_thread(poll)


async def active_call(server: Server) -> dict:
    """The record of the Exotel call that is up now."""
    def poll() -> dict:
        with server.client() as http:
            active = wait_for(lambda: next((s for s in http.get("/v1/sessions").json()["sessions"]
                                            if s["transport"] == "exotel" and s["state"] == "active"), None), 15)
            return http.get(f"/v1/sessions/{active['sessionId']}").json()
    return await asyncio.to_thread(poll)


def session_in(url: str) -> str:
    return url.split("token=", 1)[1].split(".", 1)[0]


async def test_a_call_reaches_the_bot_and_hears_it(server):
    result = await caller_of(server).call("tone", [], listen_s=8)
    stream = result.last
    assert stream.url.startswith(server.url.replace("http://", f"ws://{KEY}:{TOKEN}@") + "/v1/telephony/exotel/stream?")
    assert stream.ttfw_ms is not None and stream.frames_in > 0 and stream.close_code == 1000
    pcm = stream.pcm16().astype(float)
    spectrum = np.abs(np.fft.rfft(pcm[:4000]))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) < 10  # the greeting: a 440 Hz tone, as 8 kHz PCM
    assert result.says == [] and not result.hung_up_by_flow  # the caller hung up: no applet after that

    record = await record_of(server, session_in(stream.url))
    assert record["transport"] == "exotel" and record["endReason"] == "hangup"
    assert record["endDetail"] == "caller sent stop"
    assert record["latency"]["ttfwMs"] > 0  # stream start -> first non-silent outbound media
    relay = record["latency"]["relayMs"]
    assert relay["inbound"]["frames"] > 5 and relay["outbound"]["frames"] > 0
    assert {"stream_start", "first_audio", "answered"} <= set(record["timingsMs"])


async def test_forged_or_missing_credentials_are_refused(server):
    with pytest.raises(WebhookRefused) as refused:
        await caller_of(server, token="not-the-token").call("tone", [])
    assert refused.value.status == 403 and json.loads(refused.value.body)["code"] == "SIGNATURE_INVALID"
    assert "Basic credentials are not EXOTEL_API_KEY:EXOTEL_API_TOKEN" in refused.value.body
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/v1/telephony/exotel/tone", "/v1/telephony/exotel/tone/ended",
                     "/v1/telephony/exotel/tone/say", "/v1/telephony/exotel/tone/hold"):
            response = await http.get(path, params={"CallSid": "c1"})
            assert response.status_code == 403 and "Authorization header missing" in response.json()["error"], path
        # credentials right, the call's id missing: the field is named
        response = await http.get("/v1/telephony/exotel/tone", headers={"Authorization": basic_authorization(KEY, TOKEN)})
        assert response.status_code == 400 and response.json()["field"] == "CallSid"
    # the stream handshake checks them too
    url = await caller_of(server).voicebot_url(caller_of(server).flow("tone"), "call-forged")
    for bad in (url.replace(f"{KEY}:{TOKEN}@", ""), url.replace(f":{TOKEN}@", ":forged@")):
        code, reason = await open_stream(bad, [CONNECTED])
        assert code == 4003 and "STREAM_CREDENTIALS_INVALID" in reason, (code, reason)
    code, _ = await open_stream(url, [CONNECTED, start_frame("call-forged", {"token": url.split("token=")[1]}), STOP])
    assert code == 1000  # with the credentials, the same stream is the call's


CONNECTED = json.dumps({"event": "connected"})


def start_frame(call_sid: str, params: dict | str, **fields: object) -> str:
    start = {"stream_sid": "MZ1", "call_sid": call_sid, "account_sid": "AC1", "from": "+91", "to": "+91",
             "custom_parameters": params, "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000",
                                                           "bit_rate": "16"}, **fields}
    return json.dumps({"event": "start", "sequence_number": "1", "stream_sid": "MZ1", "start": start})


def media_frame(payload: str) -> str:
    return json.dumps({"event": "media", "sequence_number": "2", "stream_sid": "MZ1",
                       "media": {"chunk": "1", "timestamp": "100", "payload": payload}})


STOP = json.dumps({"event": "stop", "sequence_number": "3", "stream_sid": "MZ1", "stop": {"reason": "callended"}})


async def open_stream(url: str, frames: list[str]) -> tuple[int, str]:
    """Send frames on a stream socket as Exotel would; return how the server closed it."""
    async with websockets.connect(url) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


async def test_stream_tokens_expired_forged_reused_or_of_another_call_are_refused(server):
    caller = caller_of(server)
    url = await caller.voicebot_url(caller.flow("tone"), "call-tokens")
    session_id = session_in(url)
    base = url.split("?")[0]
    # a replayed dynamic-URL request is the same call: the same session, never a second one
    again = await caller.voicebot_url(caller.flow("tone"), "call-tokens")
    assert session_in(again) == session_id and again != url

    code, reason = await open_stream(base, [CONNECTED, start_frame("call-tokens", {})])
    assert code == 4003 and "stream token missing" in reason
    expired = StreamTokens(SECRET.encode(), ttl_s=-5).mint(session_id)
    code, reason = await open_stream(base, [CONNECTED, start_frame("call-tokens", {"token": expired})])
    assert code == 4003 and "expired" in reason
    forged = StreamTokens(b"someone-elses-secret-0123", ttl_s=30).mint(session_id)
    code, reason = await open_stream(base, [CONNECTED, start_frame("call-tokens", {"token": forged})])
    assert code == 4003 and "forged" in reason
    token = url.split("token=", 1)[1]
    code, reason = await open_stream(base, [CONNECTED, start_frame("another-call", {"token": token})])
    assert code == 4003 and "for another call" in reason  # and that token is spent now
    token = again.split("token=", 1)[1]
    code, reason = await open_stream(base, [CONNECTED, start_frame("call-tokens", {"token": token}), STOP])
    assert code == 1000  # the real use of the token
    code, reason = await open_stream(base, [CONNECTED, start_frame("call-tokens", {"token": token})])
    assert code == 4003 and "already used" in reason
    # a replay once the call has had its stream gets no stream
    late = await caller.voicebot_url(caller.flow("tone"), "call-tokens")
    assert "token=" not in late


@pytest.mark.parametrize("bad, reason", [
    ("{this is not json", "frame: not JSON"),
    (media_frame("%%%not-base64%%%"), "media.payload: is not valid base64"),
    (media_frame(base64.b64encode(b"\x00\x00\x00").decode()), "whole 16-bit samples"),
    (json.dumps({"event": "dtmf", "stream_sid": "MZ1", "dtmf": {"digit": "twelve"}}), "dtmf.digit"),
])
async def test_malformed_frames_end_only_their_call(server, bad, reason):
    caller = caller_of(server)
    good = asyncio.create_task(caller.call("tone", [], listen_s=6))  # beside the bad call, undisturbed
    call_sid = f"call-bad-{abs(hash(bad))}"
    url = await caller.voicebot_url(caller.flow("tone"), call_sid)
    silence = media_frame(base64.b64encode(b"\x00" * 1600).decode())
    code, close_reason = await open_stream(url, [CONNECTED, start_frame(call_sid, {"token": url.split("token=")[1]}),
                                                 silence, bad])
    assert code == 1007 and "STREAM_PROTOCOL_ERROR" in close_reason and reason in close_reason, close_reason
    assert (await record_of(server, session_in(url)))["endReason"] == "protocol_error"
    good_result = await good
    assert good_result.last.ttfw_ms is not None and good_result.last.close_code == 1000
    assert (await record_of(server, session_in(good_result.last.url)))["endReason"] == "hangup"


async def test_malformed_starts_close_their_socket_with_the_field_named(server):
    caller = caller_of(server)
    good = asyncio.create_task(caller.call("tone", [], listen_s=6))
    cases = [
        ({"media_format": {"encoding": "audio/x-raw", "sample_rate": "16000", "bit_rate": "16"}},
         "start.media_format.sample_rate"),
        ({"media_format": ["audio/x-raw"]}, "start.media_format: must be an object"),
        ({"account_sid": 5}, "start.account_sid"),
    ]
    url = await caller.voicebot_url(caller.flow("tone"), "call-starts")
    token = url.split("token=")[1]
    for fields, reason in cases:  # a bad start spends no token: the call may still open its stream
        code, close_reason = await open_stream(url, [CONNECTED, start_frame("call-starts", {"token": token}, **fields)])
        assert code == 1007 and reason in close_reason, (fields, code, close_reason)
    code, close_reason = await open_stream(url, [CONNECTED, start_frame("call-starts", {"token": 12345})])
    assert code == 1007 and "start.custom_parameters.token" in close_reason
    code, _ = await open_stream(url, [CONNECTED, start_frame("call-starts", {"token": token}), STOP])
    assert code == 1000
    good_result = await good
    assert good_result.last.ttfw_ms is not None and good_result.last.close_code == 1000
    assert "Traceback" not in server.log_tail(400)


async def test_a_caller_whose_bot_is_killed_hears_the_lost_message(server):
    caller = caller_of(server)
    call = asyncio.create_task(caller.call("tone", STAY, listen_s=30))
    session = await active_call(server)
    await asyncio.sleep(1.0)  # the call is up, the greeting heard
    killed_at = time.monotonic()
    os.kill(session["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(call, 15)
    assert result.last.close_code == 1011 and "crashed" in result.last.close_reason, result.last.close_reason
    assert result.says == [SETTINGS.lost_message] and result.hung_up_by_flow
    assert time.monotonic() - killed_at < 6  # a bound on silence, not a benchmark
    assert (await record_of(server, session["sessionId"]))["endReason"] == "crashed"


async def test_ending_the_session_hangs_up_through_the_flow(server):
    """The bot (or an operator) ends the call: voxfleet closes the stream and Exotel's flow goes
    on to its Hangup applet, with nothing said (Exotel has no REST hang-up for a flow's call)."""
    caller = caller_of(server)
    call = asyncio.create_task(caller.call("tone", STAY, listen_s=30, after_greeting=False, hang_up=False))
    session = await active_call(server)
    with server.client() as http:
        assert http.delete(f"/v1/sessions/{session['sessionId']}").status_code == 200
    result = await asyncio.wait_for(call, 15)
    assert result.last.close_code == 1000, (result.last.close_code, result.last.close_reason)
    assert result.says == [] and result.hung_up_by_flow


async def test_without_credentials_exotel_calls_are_refused():
    server = Server("--dev", "--bot", TONE_BOT, env={"EXOTEL_API_KEY": "", "EXOTEL_API_TOKEN": "",
                                                      "VOXFLEET_AGENTS": NO_WARM_POOL})
    try:
        with pytest.raises(WebhookRefused) as refused:
            await caller_of(server).call("tone", [])
        assert refused.value.status == 403 and "EXOTEL_API_KEY and EXOTEL_API_TOKEN are not configured" in \
            refused.value.body
        url = server.url.replace("http://", f"ws://{KEY}:{TOKEN}@") + "/v1/telephony/exotel/stream"
        code, reason = await open_stream(url, [CONNECTED])
        assert code == 4003 and "not configured" in reason
    finally:
        server.stop()


def busy_server(when_busy: str) -> Server:
    # room for one tone bot: 500 mCPU, no warm pool, one queued caller at most
    return Server("--dev", "--bot", TONE_BOT, env={
        **ENV, "VOXFLEET_CAPACITY_CPU_MILLIS": "500", "VOXFLEET_QUEUE_MAX": "1", "VOXFLEET_QUEUE_WAIT_S": "8",
        "VOXFLEET_TELEPHONY__WHEN_BUSY": when_busy, "VOXFLEET_TELEPHONY__HOLD_CHECK_S": "1",
        "VOXFLEET_AGENTS": NO_WARM_POOL,
    })


async def test_at_capacity_callers_hold_then_connect():
    server = busy_server("hold")
    try:
        caller = caller_of(server)
        first = asyncio.create_task(caller.call("tone", [np.zeros(8000 * 2, np.int16)], listen_s=3))
        await asyncio.sleep(1.5)
        # the second caller hears busy_message (the Greeting applet), holds (back to the Voicebot
        # applet every hold_check_s), and connects once the first call ends
        second = await caller.call("tone", [], listen_s=6)
        assert second.says == [SETTINGS.busy_message], second.says
        assert len(second.streams) >= 2 and second.last.ttfw_ms is not None
        assert (await first).last.ttfw_ms is not None
        assert all(stream.close_code == 1000 for stream in second.streams)
    finally:
        server.stop()


async def test_at_capacity_callers_can_be_told_goodbye():
    server = busy_server("hangup")
    try:
        caller = caller_of(server)
        first = asyncio.create_task(caller.call("tone", [np.zeros(8000, np.int16)], listen_s=3))
        await asyncio.sleep(1.5)
        busy = await caller.call("tone", [])
        assert len(busy.streams) == 1 and busy.last.ttfw_ms is None and busy.hung_up_by_flow
        assert len(busy.says) == 1 and "busy" in busy.says[0] and SETTINGS.goodbye_message in busy.says[0]
        await first
        with server.client() as http:
            sessions = http.get("/v1/sessions").json()["sessions"]
        assert any(s["endReason"] == "busy" and s["transport"] == "exotel" for s in sessions)
    finally:
        server.stop()


async def test_phone_call_conversation_with_the_assistant(assistant_server):
    caller = ExotelCaller(assistant_server.url, KEY, TOKEN)
    question = speak("What is the capital of France?", sample_rate=8000)
    result = await caller.call("assistant", [question], listen_s=45)
    stream = result.last
    assert stream.ttfw_ms is not None, "no greeting"
    assert len(stream.v2v_ms) == 1, "the bot did not answer the question"
    heard = transcribe(stream.pcm16(), 8000).lower()
    assert "assistant" in heard and len(heard.split()) > 12, heard  # the greeting plus an answer
    with assistant_server.client() as http:
        record = await asyncio.to_thread(wait_for, lambda: (r := http.get(
            f"/v1/sessions/{session_in(stream.url)}").json())["state"] == "ended" and r, 15)
    assert record["transport"] == "exotel" and record["endReason"] == "hangup"
    said = [line["text"].lower() for line in record["transcript"] if line["role"] == "user"]
    assert any("capital" in s and "france" in s for s in said), record["transcript"]
    assert len(record["latency"]["turnsV2vMs"]) >= 1
