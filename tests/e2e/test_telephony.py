"""Phone calls as Twilio places them (signed webhook, TwiML, Media Streams), against real
`voxfleet serve` processes with the model-free tone bot; the spoken conversation with the
offline assistant is in test_phone_conversation.py."""

import asyncio
import base64
import json
import time
import urllib.parse
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import TWILIO_ACCOUNT_SID as ACCOUNT
from tests.conftest import TWILIO_AUTH_TOKEN as AUTH_TOKEN
from tests.conftest import TWILIO_ENV, RestRecorder, Server, session_of, wait_for
from voxfleet.bench.twilio_caller import TwilioCaller, WebhookRefused
from voxfleet.transports.stream_tokens import StreamTokens

pytestmark = pytest.mark.e2e

TONE_BOT = str(Path(__file__).parents[2] / "src/voxfleet/bots/tone.py")
SECRET = "stream-token-secret-for-tests"
TWILIO_ENV = {**TWILIO_ENV, "VOXFLEET_TELEPHONY__STREAM_TOKEN_SECRET": SECRET}


class FakeTwilioAPI(RestRecorder):
    """Stands in for Twilio's REST API, which cannot be reached from here: records each request
    as (method, path, form)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        super().__init__()

    def record(self, method: str, path: str, headers, body: str) -> None:
        self.requests.append((method, path, dict(urllib.parse.parse_qsl(body))))

    def reply(self, method: str, path: str) -> tuple[int, dict | None]:
        call_sid = path.rsplit("/", 1)[-1].removesuffix(".json")
        return 200, {"sid": call_sid, "status": "completed", "account_sid": ACCOUNT}


@pytest.fixture(scope="module")
def twilio_api():
    api = FakeTwilioAPI()
    yield api
    api.close()


@pytest.fixture(scope="module")
def phone_server(twilio_api):
    server = Server("--dev", "--bot", TONE_BOT, env={**TWILIO_ENV, "VOXFLEET_TELEPHONY__TWILIO_API_BASE": twilio_api.url,
                                                       "VOXFLEET_IDLE_TIMEOUT_S": "5"})
    yield server
    server.stop()


async def test_a_call_reaches_the_bot_and_hears_it(phone_server):
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial("tone")
    answer = answers[-1]
    assert answer.stream_url == phone_server.url.replace("http://", "ws://") + "/v1/telephony/twilio/stream"
    assert set(answer.parameters) == {"session", "token"}
    result = await caller.stream(answer, call_sid, [], listen_s=8)
    # the bot's greeting (a 440 Hz tone) arrives as real mu-law media
    assert result.ttfw_ms is not None and result.frames_in > 0
    pcm = result.pcm16().astype(float)
    spectrum = np.abs(np.fft.rfft(pcm[: 4000]))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) < 10
    assert result.close_code == 1000

    record = await session_of(phone_server, answer.parameters["session"])
    assert record["transport"] == "twilio" and record["endReason"] == "hangup"
    assert record["endDetail"] == "caller sent stop"
    assert record["latency"]["ttfwMs"] > 0  # stream start -> first non-silent outbound media
    relay = record["latency"]["relayMs"]
    assert relay["inbound"]["frames"] > 10 and relay["inbound"]["p50"] > 0
    assert relay["outbound"]["frames"] > 0
    assert {"stream_start", "first_audio", "answered"} <= set(record["timingsMs"])


async def test_an_auth_token_alone_answers_calls(tmp_path):
    """TWILIO_AUTH_TOKEN without TWILIO_ACCOUNT_SID is a valid setup for inbound calls: the bot
    (Pipecat's serializer wants the account for its hang-up) takes it from the call's webhook
    instead of dying at once and leaving the caller in silence."""
    server = Server("--bot", TONE_BOT, env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ""})
    try:
        caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
        call_sid, answers = await caller.dial("tone")
        result = await caller.stream(answers[-1], call_sid, [], listen_s=4)
        assert result.ttfw_ms is not None and result.frames_in > 0, server.log_tail(40)
        record = await session_of(server, answers[-1].parameters["session"])
        assert record["endReason"] == "hangup", record
        assert "auto_hang_up is enabled but missing" not in server.log_tail(400)
    finally:
        server.stop()


async def test_bad_or_missing_signature_is_refused(phone_server):
    caller = TwilioCaller(phone_server.url, "not-the-auth-token", account_sid=ACCOUNT)
    with pytest.raises(WebhookRefused) as refused:
        await caller.dial("tone")
    assert refused.value.status == 403 and "X-Twilio-Signature does not match" in refused.value.body
    assert json.loads(refused.value.body)["code"] == "SIGNATURE_INVALID"
    with httpx.Client(base_url=phone_server.url) as http:
        response = http.post("/v1/telephony/twilio/tone", data={"CallSid": "CA1"})
    assert response.status_code == 403 and "header missing" in response.json()["error"]
    # a correctly signed webhook without the call's id names the field
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN)
    from twilio.request_validator import RequestValidator
    url = f"{phone_server.url}/v1/telephony/twilio/tone"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {"From": "+1"})
    with httpx.Client() as http:
        response = http.post(url, data={"From": "+1"}, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 400 and response.json()["field"] == "CallSid"
    with phone_server.client() as http:
        assert http.get("/healthz").status_code == 200


async def open_stream(server: Server, parameters: dict[str, str], frames: list[str]) -> tuple[int, str]:
    """Send frames on a stream socket as Twilio would; return how the server closed it."""
    async with websockets.connect(server.url.replace("http://", "ws://") + "/v1/telephony/twilio/stream") as ws:
        for frame in frames:
            await ws.send(frame.replace("PARAMS", json.dumps(parameters)))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
START = ('{"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1", '
         '"accountSid": "AC1", "customParameters": PARAMS, '
         '"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}')


async def test_stream_tokens_missing_reused_or_expired_are_refused(phone_server):
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    _call, answers = await caller.dial("tone")
    params = answers[-1].parameters
    session_id = params["session"]

    code, reason = await open_stream(phone_server, {"session": session_id}, [CONNECTED, START])
    assert code == 4003 and "stream token missing" in reason

    expired = StreamTokens(SECRET.encode(), ttl_s=-5).mint(session_id)
    code, reason = await open_stream(phone_server, {"session": session_id, "token": expired}, [CONNECTED, START])
    assert code == 4003 and "expired" in reason

    forged = StreamTokens(b"someone-elses-secret", ttl_s=30).mint(session_id)
    code, reason = await open_stream(phone_server, {"session": session_id, "token": forged}, [CONNECTED, START])
    assert code == 4003 and "forged" in reason

    code, reason = await open_stream(phone_server, params, [CONNECTED, START, json.dumps(
        {"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}})])
    assert code == 1000  # the real use of the token
    code, reason = await open_stream(phone_server, params, [CONNECTED, START])
    assert code == 4003 and "already used" in reason


def media_frame(payload: str) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})


@pytest.mark.parametrize("bad, reason", [
    ("{this is not json", "frame: not JSON"),
    (media_frame("%%%not-base64%%%"), "media.payload: is not valid base64"),
    (json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}), "a stream starts once"),
])
async def test_malformed_frames_end_only_their_call(phone_server, bad, reason):
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    # a good call runs alongside the bad one and is not disturbed
    good_sid, good_answers = await caller.dial("tone")
    good = asyncio.create_task(caller.stream(good_answers[-1], good_sid, [], listen_s=6))
    _bad_sid, answers = await caller.dial("tone")
    silence = media_frame(base64.b64encode(b"\xff" * 160).decode())
    code, close_reason = await open_stream(phone_server, answers[-1].parameters, [CONNECTED, START, silence, bad])
    assert code == 1007 and "STREAM_PROTOCOL_ERROR" in close_reason and reason in close_reason
    record = await session_of(phone_server, answers[-1].parameters["session"])
    assert record["endReason"] == "protocol_error"

    good_result = await good
    assert good_result.ttfw_ms is not None and good_result.close_code == 1000
    assert (await session_of(phone_server, good_answers[-1].parameters["session"]))["endReason"] == "hangup"


def start_frame(media_format: object = None, params: object = "PARAMS") -> str:
    media = json.dumps({"encoding": "audio/x-mulaw", "sampleRate": 8000} if media_format is None else media_format)
    shown = params if params == "PARAMS" else json.dumps(params)
    return ('{"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1", '
            f'"customParameters": {shown}, "mediaFormat": {media}}}}}')


async def test_malformed_starts_close_their_socket_with_a_reason_while_a_good_call_goes_on(phone_server):
    """Every malformed start: non-numeric sample rate, non-object mediaFormat, a token that is not
    a string or not ASCII, JSON nested too deeply; 1007 (or 4003) with the field named, never a
    traceback, and the good call beside them completes."""
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    good_sid, good_answers = await caller.dial("tone")
    good = asyncio.create_task(caller.stream(good_answers[-1], good_sid, [], listen_s=6))
    _sid, answers = await caller.dial("tone")
    session = answers[-1].parameters["session"]
    cases = [
        (start_frame({"encoding": "audio/x-mulaw", "sampleRate": "8k"}), "start.mediaFormat.sampleRate"),
        (start_frame(["audio/x-mulaw"]), "start.mediaFormat: must be an object"),
        (start_frame(params={"session": session, "token": 12345}), "start.customParameters.token"),
        (start_frame(params={"session": session, "token": "t\u00e9l\u00e9phone"}), "start.customParameters.token"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        (json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "A" * 20000}}), "over 16384"),
    ]
    for frame, reason in cases:
        code, close_reason = await open_stream(phone_server, answers[-1].parameters, [CONNECTED, frame])
        assert code in (1007, 4003) and reason in close_reason, (frame[:80], code, close_reason)
    good_result = await good
    assert good_result.ttfw_ms is not None and good_result.close_code == 1000
    assert "Traceback" not in phone_server.log_tail(400)


async def test_media_before_start_is_a_protocol_error(phone_server):
    code, reason = await open_stream(phone_server, {}, [CONNECTED, media_frame("/w==")])
    assert code == 1007 and "arrived before start" in reason


async def test_ending_the_session_hangs_up_the_call_through_twilio(phone_server, twilio_api):
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial("tone")
    call = asyncio.create_task(caller.stream(answers[-1], call_sid, [], listen_s=30, after_greeting=False,
                                             send_stop=False))
    session_id = answers[-1].parameters["session"]
    await session_of(phone_server, session_id, state="active")
    async with httpx.AsyncClient(base_url=phone_server.url) as http:
        assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 200
    result = await asyncio.wait_for(call, 15)
    assert result.close_code == 1000 and result.close_reason in ("the bot ended the call", "session ended (hangup)")
    path = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{call_sid}.json"
    hung_up = lambda: any(p == path and form.get("Status") == "completed" for _m, p, form in twilio_api.requests)  # noqa: E731
    await asyncio.to_thread(wait_for, hung_up, 10)


async def test_caller_vanishing_ends_the_session(phone_server):
    """No frame at all for idle_timeout_s (a stream Twilio lost): the session ends."""
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    _call, answers = await caller.dial("tone")
    started = time.monotonic()
    code, reason = await open_stream(phone_server, answers[-1].parameters, [CONNECTED, START])
    assert code == 1001 and "no frame for 5s" in reason and time.monotonic() - started < 15
    assert (await session_of(phone_server, answers[-1].parameters["session"]))["endReason"] == "idle_timeout"


def busy_server(when_busy: str) -> Server:
    # room for one tone bot: 500 mCPU, no warm pool, one queued caller at most
    return Server("--dev", "--bot", TONE_BOT, env={
        **TWILIO_ENV, "VOXFLEET_CAPACITY_CPU_MILLIS": "500", "VOXFLEET_QUEUE_MAX": "1", "VOXFLEET_QUEUE_WAIT_S": "6",
        "VOXFLEET_TELEPHONY__WHEN_BUSY": when_busy, "VOXFLEET_TELEPHONY__HOLD_CHECK_S": "1",
        "VOXFLEET_AGENTS": json.dumps([{"name": "tone", "bot": TONE_BOT, "min_warm": 0, "warm_pct": 0,
                                        "pool_policy": "fixed"}]),
    })


async def test_at_capacity_callers_hold_then_connect():
    server = busy_server("hold")
    try:
        caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
        first_sid, first = await caller.dial("tone")
        assert first[-1].stream_url
        first_call = asyncio.create_task(caller.stream(first[-1], first_sid, [], listen_s=3))
        # the second caller is told, politely, and holds; it connects once the first call ends
        second_sid, second = await caller.dial("tone")
        assert second[0].says and "busy" in second[0].says[0] and second[0].redirect and not second[0].hangup
        assert len(second) >= 2 and second[-1].stream_url, [a.xml for a in second]
        await first_call
        result = await caller.stream(second[-1], second_sid, [], listen_s=6)
        assert result.ttfw_ms is not None
        # a third caller while the queue is full holds by retrying, and is told goodbye when time is up
        third_task = asyncio.create_task(caller.dial("tone"))
        await asyncio.sleep(0.3)
        fourth_sid, fourth = await caller.dial("tone", max_redirects=40)
        assert fourth[0].says and fourth[0].redirect
        _third_sid, third = await third_task
        assert third[-1].stream_url or third[-1].hangup
    finally:
        server.stop()


async def test_at_capacity_callers_can_be_told_goodbye():
    server = busy_server("hangup")
    try:
        caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
        first_sid, first = await caller.dial("tone")
        first_call = asyncio.create_task(caller.stream(first[-1], first_sid, [], listen_s=4, after_greeting=False))
        _sid, busy = await caller.dial("tone")
        assert len(busy) == 1 and busy[0].hangup and "busy" in busy[0].says[0].lower(), busy[0].xml
        await first_call
        with server.client() as http:
            sessions = http.get("/v1/sessions").json()["sessions"]
        assert any(s["endReason"] == "busy" and s["transport"] == "twilio" for s in sessions)
    finally:
        server.stop()


async def test_generic_websocket_session_with_pipecat_protobuf_frames(phone_server):
    from voxfleet.bench.ws_client import call, start_websocket_session

    result = await call(phone_server.url, [], listen_s=6)
    assert result.ttfw_ms is not None and result.sample_rate
    pcm = result.pcm16().astype(float)
    window = pcm[: result.sample_rate // 2]
    assert abs(np.argmax(np.abs(np.fft.rfft(window))) * result.sample_rate / window.size - 440) < 10
    record = await session_of(phone_server, result.session_id)
    assert record["transport"] == "websocket" and record["endReason"] == "hangup"
    assert record["latency"]["relayMs"]["outbound"]["frames"] > 0

    # the token is single-use, and required
    started = await start_websocket_session(phone_server.url)
    ws_url = started["wsUrl"]
    for url, reason in ((ws_url, "stream token missing"), (f"{ws_url}?token=nonsense", "malformed")):
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4003 and reason in ws.close_reason
    async with websockets.connect(f"{ws_url}/{started['token']}") as ws:  # the token in the path works too
        await asyncio.wait_for(ws.recv(), 5)
    async with websockets.connect(f"{ws_url}?token={started['token']}") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4003 and "already used" in ws.close_reason


async def test_caller_closing_the_socket_ends_the_session(phone_server):
    caller = TwilioCaller(phone_server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    _call, answers = await caller.dial("tone")
    url = phone_server.url.replace("http://", "ws://") + "/v1/telephony/twilio/stream"
    async with websockets.connect(url) as ws:
        await ws.send(CONNECTED)
        await ws.send(START.replace("PARAMS", json.dumps(answers[-1].parameters)))
        await asyncio.wait_for(ws.recv(), 10)  # the greeting starts: the call is up
    record = await session_of(phone_server, answers[-1].parameters["session"])
    assert record["endReason"] == "hangup" and record["endDetail"] == "caller closed the stream"
