"""Phone calls as Plivo places them (signed answer URL, Plivo XML, Audio Streams), against a real
`voxfleet serve` with the model-free tone bot; the spoken conversation is with the offline
assistant (the shared `assistant_server`)."""

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

from tests.conftest import PLIVO_ENV, RestRecorder, Server, wait_for
from voxfleet.bench.plivo_caller import PlivoCaller
from voxfleet.bench.speech import speak, transcribe
from voxfleet.bench.twilio_caller import WebhookRefused
from voxfleet.config import Settings, TelephonySettings
from voxfleet.transports.plivo_media import TOKEN_HEADER, extra_headers_for
from voxfleet.transports.stream_tokens import StreamTokens

pytestmark = pytest.mark.e2e

TONE_BOT = str(Path(__file__).parents[2] / "src/voxfleet/bots/tone.py")
AUTH_ID, AUTH_TOKEN = PLIVO_ENV["PLIVO_AUTH_ID"], PLIVO_ENV["PLIVO_AUTH_TOKEN"]
SECRET = "stream-token-secret-for-tests"
LOST = TelephonySettings().lost_message


def silence(seconds: float) -> list[np.ndarray]:
    """What a caller who stays on the line, silent, says for `seconds`."""
    return [np.zeros(int(8000 * seconds), np.int16)]


class FakePlivoAPI(RestRecorder):
    """Stands in for Plivo's REST API, which cannot be reached from here: records each request
    (method, path, Authorization) and answers a hang-up as Plivo does, 204."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        super().__init__()

    def record(self, method: str, path: str, headers, body: str) -> None:
        self.requests.append((method, path, headers.get("Authorization", "")))

    def reply(self, method: str, path: str) -> tuple[int, dict | None]:
        return 204, None


@pytest.fixture(scope="module")
def plivo_api():
    api = FakePlivoAPI()
    yield api
    api.close()


@pytest.fixture(scope="module")
def server(plivo_api):
    """Room for two tone bots (one kept warm) and no queue: a third caller holds, then connects or
    is told goodbye (hold_check_s 1, queue_wait_s 5)."""
    server = Server("--dev", "--bot", TONE_BOT, env={
        **PLIVO_ENV, "VOXFLEET_TELEPHONY__STREAM_TOKEN_SECRET": SECRET,
        "VOXFLEET_TELEPHONY__PLIVO_API_BASE": plivo_api.url, "VOXFLEET_IDLE_TIMEOUT_S": "5",
        "VOXFLEET_CAPACITY_CPU_MILLIS": "1000", "VOXFLEET_QUEUE_MAX": "0", "VOXFLEET_QUEUE_WAIT_S": "5",
        "VOXFLEET_TELEPHONY__HOLD_CHECK_S": "1",
        "VOXFLEET_AGENTS": json.dumps([{"name": "tone", "bot": TONE_BOT, "min_warm": 1, "pool_policy": "fixed"}]),
    })
    yield server
    server.stop()


async def record_of(server: Server, session_id: str, state: str = "ended", timeout: float = 10) -> dict:
    """The session's record once it is in `state` (polled off the event loop: calls run on it)."""
    def poll() -> dict:
        with server.client() as http:
            return wait_for(lambda: (r := http.get(f"/v1/sessions/{session_id}").json())["state"] == state and r,
                            timeout)
    return await asyncio.to_thread(poll)


async def test_a_call_reaches_the_bot_and_hears_it(server):
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    call_uuid, answers = await caller.dial("tone")
    answer = answers[-1]
    assert answer.stream_url == server.url.replace("http://", "ws://") + "/v1/telephony/plivo/stream"
    assert answer.stream["bidirectional"] == "true" and answer.stream["keepCallAlive"] == "true"
    assert answer.stream["contentType"] == "audio/x-mulaw;rate=8000"
    assert answer.extra_headers.startswith(f"{TOKEN_HEADER}=") and answer.extra_headers.replace("=", "").isalnum()
    assert answer.redirect and "/v1/telephony/plivo/tone/ended?session=" in answer.redirect and "&exp=" in answer.redirect
    result = await caller.stream(answer, call_uuid, [], listen_s=5)
    # the bot's greeting (a 440 Hz tone) arrives as real mu-law playAudio
    assert result.ttfw_ms is not None and result.frames_in > 0
    pcm = result.pcm16().astype(float)
    spectrum = np.abs(np.fft.rfft(pcm[: 4000]))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) < 10
    assert result.hung_up and result.after is None  # the caller hung up: Plivo runs no more XML

    record = await record_of(server, answer.session)
    assert record["transport"] == "plivo" and record["endReason"] == "hangup"
    assert record["endDetail"] == "caller closed the stream"
    assert record["latency"]["ttfwMs"] > 0  # stream start -> first non-silent playAudio
    relay = record["latency"]["relayMs"]
    assert relay["inbound"]["frames"] > 10 and relay["outbound"]["frames"] > 0
    assert {"stream_start", "first_audio", "answered"} <= set(record["timingsMs"])


async def test_forged_expired_and_replayed_requests_are_refused(server):
    forger = PlivoCaller(server.url, "not-the-auth-token", auth_id=AUTH_ID)
    with pytest.raises(WebhookRefused) as refused:
        await forger.dial("tone")
    assert refused.value.status == 403 and json.loads(refused.value.body)["code"] == "SIGNATURE_INVALID"
    assert "X-Plivo-Signature-V3 does not match" in refused.value.body
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/v1/telephony/plivo/tone", data={"CallUUID": "c1"})
    assert response.status_code == 403 and "header missing" in response.json()["error"]

    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    ended = f"{server.url}/v1/telephony/plivo/tone/ended?session=no-such-session&exp={int(time.time()) + 60}"
    params = caller.call_params("c0ffee00-0000-4000-8000-00000000000a", status="in-progress")
    first = await caller.post(ended, params, nonce="31415926535897932384")
    assert first.hangup and not first.speaks
    with pytest.raises(WebhookRefused) as refused:  # the same request again, nonce and all
        await caller.post(ended, params, nonce="31415926535897932384")
    assert refused.value.status == 403 and "replayed" in refused.value.body
    with pytest.raises(WebhookRefused) as refused:  # correctly signed, but for a URL past its time
        await caller.post(ended.rsplit("&exp=", 1)[0] + f"&exp={int(time.time()) - 5}", params)
    assert refused.value.status == 403 and "expired" in refused.value.body
    with pytest.raises(WebhookRefused) as refused:  # signed, without the call's id: the field is named
        await caller.post(f"{server.url}/v1/telephony/plivo/tone", {"From": "14155550006"})
    assert refused.value.status == 400 and json.loads(refused.value.body)["field"] == "CallUUID"


async def test_without_credentials_every_plivo_request_is_refused_with_the_reason():
    """A server not configured for Plivo answers 403 and says why, never a dead call. The route
    refuses before it reads anything else, so the app runs in-process here, without a service
    (keys off, as with --dev)."""
    from types import SimpleNamespace

    from voxfleet.control.app import build_app
    from voxfleet.control.state import AppState

    for env, missing in (({}, "PLIVO_AUTH_TOKEN"), ({"PLIVO_AUTH_TOKEN": AUTH_TOKEN}, "PLIVO_AUTH_ID")):
        settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
        app = build_app(AppState(settings=settings, service=None, auth=SimpleNamespace(mode="off"),  # type: ignore
                                 store=None, ice=None, tokens=StreamTokens(SECRET.encode(), 30)))
        caller = PlivoCaller("http://testserver", AUTH_TOKEN)
        url = "http://testserver/v1/telephony/plivo/tone"
        params = caller.call_params("c0ffee00-0000-4000-8000-00000000000b")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            response = await http.post(url, data=params, headers=caller.signed_headers(url, params))
        assert response.status_code == 403, response.text
        assert response.json() == {"error": f"Plivo webhooks are refused: {missing} is not configured",
                                   "code": "SIGNATURE_INVALID"}


async def open_stream(server: Server, frames: list[str | bytes]) -> tuple[int, str]:
    """Send frames on a stream socket as Plivo would; return how the server closed it."""
    async with websockets.connect(server.url.replace("http://", "ws://") + "/v1/telephony/plivo/stream") as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


STREAM = "5eed0000-0000-4000-8000-000000000002"


def start_frame(extra_headers: str, **fields: object) -> str:
    start = {"callId": "c0ffee00-0000-4000-8000-000000000001", "streamId": STREAM, "accountId": AUTH_ID,
             "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}, **fields}
    return json.dumps({"event": "start", "sequenceNumber": 1, "start": start, "extra_headers": extra_headers})


def media_frame(payload: str = base64.b64encode(b"\xff" * 160).decode(), stream: str = STREAM) -> str:
    return json.dumps({"event": "media", "sequenceNumber": 2, "streamId": stream,
                       "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 1, "payload": payload}})


async def test_stream_tokens_missing_forged_expired_or_reused_are_refused(server):
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    _call, answers = await caller.dial("tone")
    session_id = answers[-1].session
    cases = [
        ("userId=12345", "stream token missing"),
        (extra_headers_for(StreamTokens(SECRET.encode(), ttl_s=-5).mint(session_id)), "expired"),
        (extra_headers_for(StreamTokens(b"someone-elses-secret", ttl_s=30).mint(session_id)), "forged"),
        (f"{TOKEN_HEADER}=zz", "malformed"),
    ]
    for extra, reason in cases:
        code, close_reason = await open_stream(server, [start_frame(extra)])
        assert code == 4003 and reason in close_reason, (extra, code, close_reason)
    async with websockets.connect(server.url.replace("http://", "ws://") + "/v1/telephony/plivo/stream") as ws:
        await ws.send(start_frame(answers[-1].extra_headers))  # the real use of the token
        await ws.send(media_frame())  # Pipecat's create_transport reads two messages before the bot starts
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == "playAudio"  # the bot's greeting
    assert (await record_of(server, session_id))["endDetail"] == "caller closed the stream"
    code, close_reason = await open_stream(server, [start_frame(answers[-1].extra_headers)])
    assert code == 4003 and "already used" in close_reason
    for frames, reason in (([media_frame()], "arrived before start"), ([b"\x00\x01"], "binary frames")):
        code, close_reason = await open_stream(server, frames)
        assert code == 1007 and reason in close_reason, close_reason


@pytest.mark.parametrize("bad, reason", [
    ("{this is not json", "frame: not JSON"),
    (media_frame("%%%not-base64%%%"), "media.payload: is not valid base64"),
    (media_frame(stream="another-stream"), "streamId: is not this stream's"),
])
async def test_malformed_frames_end_only_their_call(server, bad, reason):
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    # a good call runs alongside the bad one and is not disturbed
    good_uuid, good_answers = await caller.dial("tone")
    good = asyncio.create_task(caller.stream(good_answers[-1], good_uuid, silence(2), listen_s=3))
    _bad_uuid, answers = await caller.dial("tone")
    code, close_reason = await open_stream(server, [start_frame(answers[-1].extra_headers), media_frame(), bad])
    assert code == 1007 and "STREAM_PROTOCOL_ERROR" in close_reason and reason in close_reason, close_reason
    assert (await record_of(server, answers[-1].session))["endReason"] == "protocol_error"

    good_result = await good
    assert good_result.ttfw_ms is not None and good_result.hung_up
    assert (await record_of(server, good_answers[-1].session))["endReason"] == "hangup"
    assert "Traceback" not in server.log_tail(300)


async def test_a_caller_whose_bot_is_killed_hears_the_lost_message(server):
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    call_uuid, answers = await caller.dial("tone")
    call = asyncio.create_task(caller.stream(answers[-1], call_uuid, silence(20), listen_s=30))
    record = await record_of(server, answers[-1].session, state="active")
    await asyncio.sleep(1.0)  # the call is up, the greeting heard
    os.kill(record["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(call, 15)
    assert result.close_code == 1011 and "crashed" in result.close_reason, (result.close_code, result.close_reason)
    # keepCallAlive: the call outlives the stream and Plivo runs the <Redirect> after it
    assert result.after is not None and result.after.speaks == [LOST] and result.after.hangup, result.after
    assert (await record_of(server, answers[-1].session))["endReason"] == "crashed"


async def test_ending_the_session_hangs_up_the_call_through_plivo(server, plivo_api):
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    call_uuid, answers = await caller.dial("tone")
    call = asyncio.create_task(caller.stream(answers[-1], call_uuid, silence(10), listen_s=30,
                                             after_greeting=False, hang_up=False))
    session_id = answers[-1].session
    await record_of(server, session_id, state="active")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 200
    result = await asyncio.wait_for(call, 15)
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    assert result.after is not None and result.after.hangup and not result.after.speaks  # no lost message
    basic = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
    hung_up = lambda: ("DELETE", f"/v1/Account/{AUTH_ID}/Call/{call_uuid}/", basic) in plivo_api.requests  # noqa: E731
    await asyncio.to_thread(wait_for, hung_up, 10)


async def test_at_capacity_callers_hold_then_connect_or_hear_goodbye(server):
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    busy = []
    for _ in range(2):  # both bots busy
        call_uuid, answers = await caller.dial("tone")
        busy.append(asyncio.create_task(caller.stream(answers[-1], call_uuid, silence(2), listen_s=2,
                                                      after_greeting=False)))
    # the third caller is told, politely, and holds; it connects once a call ends
    held_uuid, held = await caller.dial("tone")
    assert held[0].speaks and "busy" in held[0].speaks[0] and held[0].wait_s == 1 and held[0].redirect
    assert "exp=" in held[0].redirect and not held[0].hangup
    assert held[-1].stream_url, [a.xml for a in held]
    await asyncio.gather(*busy)
    # while two calls go on for longer than queue_wait_s, a caller holds, then hears goodbye
    busy = [asyncio.create_task(caller.stream(held[-1], held_uuid, silence(8), listen_s=8, after_greeting=False))]
    call_uuid, answers = await caller.dial("tone")
    busy.append(asyncio.create_task(caller.stream(answers[-1], call_uuid, silence(8), listen_s=8,
                                                  after_greeting=False)))
    _uuid, told = await caller.dial("tone")
    assert told[0].speaks and told[-1].hangup and not told[-1].stream_url, [a.xml for a in told]
    assert told[-1].speaks == [TelephonySettings().goodbye_message]
    await asyncio.gather(*busy)


async def test_phone_call_conversation(assistant_server):
    caller = PlivoCaller(assistant_server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    call_uuid, answers = await caller.dial("assistant")
    question = speak("What is the capital of France?", sample_rate=8000)
    result = await caller.stream(answers[-1], call_uuid, [question], listen_s=45)

    assert result.ttfw_ms is not None, "no greeting"
    assert len(result.v2v_ms) == 1, "the bot did not answer the question"
    heard = transcribe(result.pcm16(), 8000).lower()
    assert "assistant" in heard, heard  # the greeting: "Hello! I'm your voice assistant..."
    assert len(heard.split()) > 12, heard  # greeting plus an answer

    record = await record_of(assistant_server, answers[-1].session, timeout=15)
    assert record["transport"] == "plivo" and record["endReason"] == "hangup"
    assert record["latency"]["ttfwMs"] > 0
    said = [line["text"].lower() for line in record["transcript"] if line["role"] == "user"]
    assert any("capital" in s and "france" in s for s in said), record["transcript"]
    assert len(record["latency"]["turnsV2vMs"]) >= 1
