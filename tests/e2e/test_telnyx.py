"""Phone calls as Telnyx places them through a TeXML application (Ed25519-signed webhook, TeXML,
Media Streaming), against real `voxfleet serve` processes: the model-free tone bot, and a spoken
conversation with the offline assistant (the session's shared `assistant_server`)."""

import asyncio
import base64
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import TELNYX_ACCOUNT, RestRecorder, Server, session_of, wait_for
from voxfleet.bench.speech import speak, transcribe
from voxfleet.bench.telnyx_caller import TelnyxCaller, call_control_id, stream_attributes
from voxfleet.bench.twilio_caller import WebhookRefused
from voxfleet.config import TelephonySettings

pytestmark = pytest.mark.e2e

TONE_BOT = str(Path(__file__).parents[2] / "src/voxfleet/bots/tone.py")
TELNYX_ENV = {**TELNYX_ACCOUNT.env, "VOXFLEET_TELEPHONY__STREAM_TOKEN_SECRET": "stream-token-secret-for-tests"}
LOST = TelephonySettings().lost_message
STAY = [np.zeros(8000 * 20, np.int16)]  # a caller who stays on the line, silent, for 20 s


class FakeTelnyxAPI(RestRecorder):
    """Stands in for Telnyx's REST API (Call Control), which cannot be reached from here: records
    each request as (path, Authorization header)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        super().__init__("/v2")

    def record(self, method: str, path: str, headers, body: str) -> None:
        self.requests.append((path, headers.get("Authorization", "")))

    def reply(self, method: str, path: str) -> tuple[int, dict | None]:
        return 200, {"data": {"result": "ok"}}

    def hung_up(self, call_sid: str) -> bool:
        return (f"/v2/calls/{call_sid}/actions/hangup", f"Bearer {TELNYX_ACCOUNT.api_key}") in self.requests


@pytest.fixture(scope="module")
def telnyx_api():
    api = FakeTelnyxAPI()
    yield api
    api.close()


@pytest.fixture(scope="module")
def server(telnyx_api):
    server = Server("--dev", "--bot", TONE_BOT, env={**TELNYX_ENV, "VOXFLEET_TELEPHONY__TELNYX_API_BASE": telnyx_api.url,
                                                      "VOXFLEET_IDLE_TIMEOUT_S": "5"})
    yield server
    server.stop()


async def test_a_call_reaches_the_bot_and_hears_it(server, telnyx_api):
    caller = TelnyxCaller(server.url)
    call_sid, answers = await caller.dial("tone")
    answer = answers[-1]
    assert answer.stream_url == server.url.replace("http://", "ws://") + "/v1/telephony/telnyx/stream"
    assert stream_attributes(answer)["bidirectionalMode"] == "rtp"
    assert set(answer.parameters) == {"session", "token"}
    session_id = answer.parameters["session"]
    assert answer.redirect == f"{server.url}/v1/telephony/telnyx/tone/ended?session={session_id}"
    result = await caller.stream(answer, call_sid, [], listen_s=6)
    # the bot's greeting (a 440 Hz tone) arrives as real PCMU media
    assert result.ttfw_ms is not None and result.frames_in > 0
    spectrum = np.abs(np.fft.rfft(result.pcm16().astype(float)[:4000]))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) < 10
    assert result.close_code == 1000

    record = await session_of(server, session_id)
    assert record["transport"] == "telnyx" and record["endReason"] == "hangup", record
    assert record["endDetail"] == "caller sent stop"
    assert record["latency"]["ttfwMs"] > 0  # stream start -> first non-silent outbound media
    relay = record["latency"]["relayMs"]
    assert relay["inbound"]["frames"] > 10 and relay["outbound"]["frames"] > 0
    assert {"stream_start", "first_audio", "answered"} <= set(record["timingsMs"])
    assert not telnyx_api.hung_up(call_sid)  # the caller hung up: nothing to hang up at Telnyx


async def test_forged_expired_replayed_and_unsigned_webhooks_are_refused(server):
    caller = TelnyxCaller(server.url)
    url = f"{server.url}/v1/telephony/telnyx/tone"
    params = caller.call_params(call_control_id())
    with pytest.raises(WebhookRefused) as refused:
        await caller.post(url, params, key=Ed25519PrivateKey.generate())  # someone else's key
    assert refused.value.status == 403 and "telnyx-signature-ed25519 does not match" in refused.value.body
    assert json.loads(refused.value.body)["code"] == "SIGNATURE_INVALID"
    with pytest.raises(WebhookRefused) as refused:
        await caller.post(url, params, timestamp=int(time.time()) - 301)
    assert refused.value.status == 403 and "past the 300s window" in refused.value.body
    body, headers = caller.signed(params)
    async with httpx.AsyncClient(timeout=15) as http:
        first = await http.post(url, content=body, headers=headers)
        again = await http.post(url, content=body, headers=headers)  # the same request, captured and replayed
        unsigned = await http.post(url, content=body, headers={"Content-Type": headers["Content-Type"]})
        tampered = await http.post(url, content=body.replace(b"%2B1312", b"%2B1999"), headers=headers)
    assert first.status_code == 200 and "<Stream" in first.text
    assert again.status_code == 403 and "already used: a replayed request" in again.json()["error"]
    assert unsigned.status_code == 403 and "telnyx-signature-ed25519 header missing" in unsigned.json()["error"]
    assert tampered.status_code == 403 and "does not match" in tampered.json()["error"]
    # a correctly signed webhook without the call's id names the field
    with pytest.raises(WebhookRefused) as refused:
        await caller.post(url, {"From": "+13122010094"})
    assert refused.value.status == 400 and json.loads(refused.value.body)["field"] == "CallSid"
    with server.client() as http:
        assert http.get("/healthz").status_code == 200


async def test_a_server_without_telnyx_credentials_refuses_its_webhooks(others):
    """Never a dead call: without the public key nothing can be verified (and without the API key,
    unit-tested, Pipecat's Telnyx serializer could not be built: the bot could not take the call)."""
    with pytest.raises(WebhookRefused) as refused:
        await TelnyxCaller(others["bare"].url).dial("tone")
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["error"] == "Telnyx webhooks are refused: TELNYX_PUBLIC_KEY is not configured"


async def open_stream(server: Server, frames: list[str]) -> tuple[int, str]:
    """Send frames on a stream socket as Telnyx would; return how the server closed it."""
    async with websockets.connect(server.url.replace("http://", "ws://") + "/v1/telephony/telnyx/stream") as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


CONNECTED = json.dumps({"event": "connected", "version": "1.0.0"})


def start_frame(parameters: dict, **start: object) -> str:
    fields = {"call_control_id": "v3:call", "custom_parameters": parameters,
              "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}, **start}
    return json.dumps({"event": "start", "sequence_number": "1", "start": fields, "stream_id": "S1"})


def frame(event: str, stream_id: str = "S1", **fields: object) -> str:
    return json.dumps({"event": event, "stream_id": stream_id, **fields})


SILENCE = frame("media", media={"payload": base64.b64encode(b"\xff" * 160).decode()})


async def test_stream_tokens_missing_or_reused_are_refused(server):
    _call, answers = await TelnyxCaller(server.url).dial("tone")
    params = answers[-1].parameters
    code, reason = await open_stream(server, [CONNECTED, start_frame({"session": params["session"]})])
    assert code == 4003 and "stream token missing" in reason
    assert (await open_stream(server, [CONNECTED, start_frame(params), frame("stop", stop={})]))[0] == 1000
    code, reason = await open_stream(server, [CONNECTED, start_frame(params)])
    assert code == 4003 and "already used" in reason


async def test_malformed_frames_end_only_their_call(server):
    caller = TelnyxCaller(server.url)
    good_sid, good_answers = await caller.dial("tone")
    good = asyncio.create_task(caller.stream(good_answers[-1], good_sid, [], listen_s=8))
    # frames after a good start: each ends its own call
    for bad, reason in [
        ("{this is not json", "frame: not JSON"),
        (frame("media", media={"payload": "%%%not-base64%%%"}), "media.payload: is not valid base64"),
        (frame("media", "S2", media={"payload": ""}), "stream_id: is not this stream's"),
        (frame("dtmf", dtmf={"digit": "Z"}), "dtmf.digit"),
        (start_frame({}), "a stream starts once"),
    ]:
        _sid, answers = await caller.dial("tone")
        code, close_reason = await open_stream(server, [CONNECTED, start_frame(answers[-1].parameters), SILENCE, bad])
        assert code == 1007 and "STREAM_PROTOCOL_ERROR" in close_reason and reason in close_reason, close_reason
        assert (await session_of(server, answers[-1].parameters["session"]))["endReason"] == "protocol_error"
    # malformed starts: refused at the edge with the field named (the token is not spent)
    _sid, answers = await caller.dial("tone")
    params = answers[-1].parameters
    for start, reason in [
        (start_frame(params, media_format={"encoding": "G722", "sample_rate": 8000}), "start.media_format.encoding"),
        (start_frame(params, media_format={"encoding": "PCMU", "sample_rate": "8k"}), "start.media_format.sample_rate"),
        (start_frame({**params, "token": 12345}), "start.custom_parameters.token"),
        (start_frame(params, call_control_id=""), "start.call_control_id"),
        (json.dumps({"event": "start", "start": json.loads(start_frame(params))["start"]}), "stream_id"),
        (frame("media", media={"payload": "A" * 20000}), "over 16384"),
    ]:
        code, close_reason = await open_stream(server, [CONNECTED, start])
        assert code == 1007 and reason in close_reason, (start[:80], code, close_reason)
    good_result = await good
    assert good_result.ttfw_ms is not None and good_result.close_code == 1000
    assert (await session_of(server, good_answers[-1].parameters["session"]))["endReason"] == "hangup"
    assert "Traceback" not in server.log_tail(400)


async def test_ending_the_session_hangs_up_the_call_through_telnyx(server, telnyx_api):
    caller = TelnyxCaller(server.url)
    call_sid, answers = await caller.dial("tone")
    call = asyncio.create_task(caller.stream(answers[-1], call_sid, [], listen_s=30, after_greeting=False,
                                             send_stop=False))
    session_id = answers[-1].parameters["session"]
    await session_of(server, session_id, state="active")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 200
    result = await asyncio.wait_for(call, 15)
    assert result.close_code == 1000
    await asyncio.to_thread(wait_for, lambda: telnyx_api.hung_up(call_sid), 10)
    assert result.after is not None and result.after.hangup and not result.after.says


async def test_a_caller_whose_bot_is_killed_hears_the_lost_message(server, telnyx_api):
    caller = TelnyxCaller(server.url)
    call_sid, answers = await caller.dial("tone")
    call = asyncio.create_task(caller.stream(answers[-1], call_sid, STAY, listen_s=30))
    record = await session_of(server, answers[-1].parameters["session"], state="active")
    await asyncio.sleep(1.0)  # the call is up, the greeting heard
    killed_at = time.monotonic()
    os.kill(record["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(call, 15)
    told_s = time.monotonic() - killed_at
    assert result.frames_in > 0 and result.close_code == 1011 and "crashed" in result.close_reason
    # Telnyx runs the verb after <Connect>: the Redirect, answered with the lost message
    assert result.after is not None and result.after.says == [LOST] and result.after.hangup, result.after
    assert told_s < 5, told_s  # a bound on silence, not a benchmark
    assert (await session_of(server, answers[-1].parameters["session"]))["endReason"] == "crashed"
    assert not telnyx_api.hung_up(call_sid)  # a failed call is not hung up: the message is heard first


def busy_server(when_busy: str) -> Server:
    # room for one tone bot: 500 mCPU, no warm pool, one queued caller at most
    return Server("--dev", "--bot", TONE_BOT, env={
        **TELNYX_ENV, "VOXFLEET_CAPACITY_CPU_MILLIS": "500", "VOXFLEET_QUEUE_MAX": "1", "VOXFLEET_QUEUE_WAIT_S": "6",
        "VOXFLEET_TELEPHONY__WHEN_BUSY": when_busy, "VOXFLEET_TELEPHONY__HOLD_CHECK_S": "1",
        "VOXFLEET_AGENTS": json.dumps([{"name": "tone", "bot": TONE_BOT, "min_warm": 0, "warm_pct": 0,
                                        "pool_policy": "fixed"}]),
    })


@pytest.fixture(scope="module")
def others():
    """The servers of single tests, started side by side: at capacity holding or saying goodbye,
    and one without Telnyx credentials."""
    starts = {"hold": lambda: busy_server("hold"), "hangup": lambda: busy_server("hangup"),
              "bare": lambda: Server("--bot", TONE_BOT, env={"TELNYX_PUBLIC_KEY": "", "TELNYX_API_KEY": ""})}
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = {name: pool.submit(start) for name, start in starts.items()}
    servers = {name: future.result() for name, future in futures.items() if not future.exception()}
    if len(servers) < len(starts):
        for server in servers.values():
            server.stop()
        raise next(f.exception() for f in futures.values() if f.exception())  # type: ignore[misc]
    yield servers
    for server in servers.values():
        server.stop()


async def test_at_capacity_callers_hold_then_connect(others):
    server = others["hold"]
    caller = TelnyxCaller(server.url)
    first_sid, first = await caller.dial("tone")
    assert first[-1].stream_url
    first_call = asyncio.create_task(caller.stream(first[-1], first_sid, [], listen_s=3))
    # the second caller is told, politely, and holds; it connects once the first call ends
    second_sid, second = await caller.dial("tone")
    assert second[0].says and "busy" in second[0].says[0] and second[0].redirect and not second[0].hangup
    assert second[0].pause_s == 1 and "/v1/telephony/telnyx/tone?session=" in second[0].redirect
    assert len(second) >= 2 and second[-1].stream_url, [a.xml for a in second]
    await first_call
    result = await caller.stream(second[-1], second_sid, [], listen_s=4)
    assert result.ttfw_ms is not None


async def test_at_capacity_callers_can_be_told_goodbye(others):
    server = others["hangup"]
    caller = TelnyxCaller(server.url)
    first_sid, first = await caller.dial("tone")
    assert first[-1].stream_url, first[-1].xml
    first_call = asyncio.create_task(caller.stream(first[-1], first_sid, [], listen_s=4, after_greeting=False))
    _sid, busy = await caller.dial("tone")
    assert len(busy) == 1 and busy[0].hangup and "busy" in busy[0].says[0].lower(), busy[0].xml
    await first_call
    with server.client() as http:
        sessions = http.get("/v1/sessions").json()["sessions"]
    assert any(s["endReason"] == "busy" and s["transport"] == "telnyx" for s in sessions)


async def test_phone_call_conversation_with_the_assistant(assistant_server):
    caller = TelnyxCaller(assistant_server.url)
    call_sid, answers = await caller.dial("assistant")
    question = speak("What is the capital of France?", sample_rate=8000)
    result = await caller.stream(answers[-1], call_sid, [question], listen_s=45)
    assert result.ttfw_ms is not None, "no greeting"
    assert len(result.v2v_ms) == 1, "the bot did not answer the question"
    heard = transcribe(result.pcm16(), 8000).lower()
    assert "assistant" in heard and len(heard.split()) > 12, heard  # the greeting, then an answer
    record = await session_of(assistant_server, answers[-1].parameters["session"], timeout=15)
    assert record["transport"] == "telnyx" and record["endReason"] == "hangup"
    assert record["latency"]["ttfwMs"] > 0 and len(record["latency"]["turnsV2vMs"]) >= 1
    said = [line["text"].lower() for line in record["transcript"] if line["role"] == "user"]
    assert any("capital" in s and "france" in s for s in said), record["transcript"]
