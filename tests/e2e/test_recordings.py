"""Recordings end to end (one server, several checks): the built-in assistant with record = true
answers a real aiortc caller and a Twilio media-stream caller; after each call its WAV exists, is
stereo, its left channel (transcribed with the bundled Whisper) holds the caller's question and
its right channel the bot's words; GET /recording needs a private key and serves audio/wav (with
byte ranges); recording.ready arrives once, signed. A bot killed with SIGKILL mid-call still
yields a finished, playable WAV. An agent that does not record has no file, and the 404 says why."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import wave
from pathlib import Path

import numpy as np
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_ENV, TWILIO_AUTH_TOKEN, Server, wait_for
from tests.e2e.test_webhooks import Receiver, free_port
from voxfleet.bench.speech import speak, transcribe
from voxfleet.bench.twilio_caller import TwilioCaller
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.config import BUILTIN_ASSISTANT
from voxfleet.transports.ice import advertise_addresses
from voxfleet.webhooks.signing import new_secret

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A server whose assistant records (webhooks to a local receiver) and whose tone agent does not."""
    advertise_addresses(["127.0.0.1"])
    port, secret = free_port(), new_secret()
    config = tmp_path_factory.mktemp("recordings") / "voxfleet.toml"
    config.write_text(f'[[agents]]\nname = "assistant"\nbot = "{BUILTIN_ASSISTANT}"\nprofile = "agent-3x"\n'
                      f'record = true\nwebhook_url = "http://127.0.0.1:{port}/hooks"\n'
                      f'webhook_secret = "{secret}"\n[[agents]]\nname = "tone"\nbot = "{Path(tone.__file__)}"\n'
                      f'min_warm = 0\npool_policy = "fixed"\n')
    receiver = Receiver(port)
    receiver.up()
    server = Server(env={"VOXFLEET_CONFIG": str(config), **TWILIO_ENV})
    server.receiver, server.secret = receiver, secret  # type: ignore[attr-defined]
    yield server
    server.stop()
    receiver.down()


def ready_recording(server: Server, session_id: str) -> dict:
    with server.client() as http:
        return wait_for(lambda: (http.get(f"/v1/sessions/{session_id}").json().get("recording") or {})
                        .get("state") == "ready" and http.get(f"/v1/sessions/{session_id}").json(), 20)["recording"]


def fetch_wav(server: Server, session_id: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The recording through the API: (caller, bot) int16 channels and the rate."""
    path = f"/v1/sessions/{session_id}/recording"
    with server.client(anonymous=True) as http:
        refused = http.get(path)
    assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED", refused.text
    with server.client() as http:
        reply = http.get(path)
        ranged = http.get(path, headers={"Range": "bytes=0-43"})
        head = http.head(path)
    assert reply.status_code == 200 and reply.headers["content-type"] == "audio/wav"
    assert ranged.status_code == 206 and ranged.content == reply.content[:44]  # a player can seek
    assert head.status_code == 200 and head.headers["content-length"] == str(len(reply.content))
    with wave.open(io.BytesIO(reply.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
        rate = wav.getframerate()
    return stereo[:, 0].copy(), stereo[:, 1].copy(), rate


def ready_webhooks(server: Server, session_id: str) -> list[dict]:
    verifier = Webhook(server.secret)  # type: ignore[attr-defined]
    found = []
    for headers, body in list(server.receiver.received):  # type: ignore[attr-defined]
        verifier.verify(body, headers)  # raises on a bad signature
        event = json.loads(body)
        if event["type"] == "recording.ready" and event["data"]["sessionId"] == session_id:
            found.append(event["data"])
    return found


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def bot_answer_words(server: Server, session_id: str) -> set[str]:
    with server.client() as http:
        transcript = http.get(f"/v1/sessions/{session_id}").json()["transcript"]
    bot_lines = [line["text"] for line in transcript if line["role"] == "bot"]
    return {w for line in bot_lines[1:] for w in words(line) if len(w) >= 5}


async def test_webrtc_call_recording_holds_question_left_and_answer_right(recorded):
    caller = WebRTCCaller(recorded.url, agent="assistant")
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=30)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)
        spoken_at = await caller.say(speak("What is the capital of France?"))
        await caller.wait_bot_audio_after(spoken_at, timeout=30)
        await caller.wait_bot_quiet(quiet_for=1.0, timeout=30)
    finally:
        await caller.close()
    session_id = result.session_id
    recording = await asyncio.to_thread(ready_recording, recorded, session_id)
    assert recording["channels"] == ["caller", "bot"] and recording["format"] == "wav"
    assert recording["sampleRate"] == 16000 and recording["durationS"] > 3 and recording["bytes"] > 44
    assert "path" not in json.dumps(recording)
    left, right, rate = await asyncio.to_thread(fetch_wav, recorded, session_id)
    heard_left = (await asyncio.to_thread(transcribe, left, rate)).lower()
    heard_right = (await asyncio.to_thread(transcribe, right, rate)).lower()
    assert {"capital", "france"} <= words(heard_left), heard_left
    assert "assistant" in heard_right, heard_right  # the greeting ...
    answer = bot_answer_words(recorded, session_id)
    assert answer & words(heard_right), (answer, heard_right)  # ... and the answer, on the bot's side only
    assert "assistant" not in heard_left, heard_left  # the channels are apart: the greeting is the bot's only
    hooks = await asyncio.to_thread(wait_for, lambda: ready_webhooks(recorded, session_id), 20)
    await asyncio.sleep(1.0)
    assert len(ready_webhooks(recorded, session_id)) == 1
    assert hooks[0]["url"] == f"/v1/sessions/{session_id}/recording" and hooks[0]["recording"]["durationS"] > 3


async def test_phone_call_recording_holds_question_left_and_answer_right(recorded):
    caller = TwilioCaller(recorded.url, TWILIO_AUTH_TOKEN, account_sid=TWILIO_ACCOUNT_SID)
    call_sid, answers = await caller.dial("assistant")
    question = speak("What is the capital of France?", sample_rate=8000)
    result = await caller.stream(answers[-1], call_sid, [question], listen_s=30)
    assert result.ttfw_ms is not None and len(result.v2v_ms) == 1
    session_id = answers[-1].parameters["session"]
    await asyncio.to_thread(ready_recording, recorded, session_id)
    left, right, rate = await asyncio.to_thread(fetch_wav, recorded, session_id)
    heard_left = (await asyncio.to_thread(transcribe, left, rate)).lower()
    heard_right = (await asyncio.to_thread(transcribe, right, rate)).lower()
    assert {"capital", "france"} <= words(heard_left), heard_left
    assert "assistant" in heard_right and bot_answer_words(recorded, session_id) & words(heard_right), heard_right
    assert "assistant" not in heard_left, heard_left
    assert len(await asyncio.to_thread(wait_for, lambda: ready_webhooks(recorded, session_id), 20)) == 1


async def test_a_bot_killed_mid_call_still_leaves_a_playable_recording(recorded):
    caller = WebRTCCaller(recorded.url, agent="assistant")
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=30)
        await asyncio.sleep(2.5)  # the greeting is being played and written
        with recorded.client() as http:
            pid = http.get(f"/v1/sessions/{result.session_id}").json()["pid"]
        os.kill(pid, signal.SIGKILL)
        with recorded.client() as http:
            ended = await asyncio.to_thread(wait_for, lambda: (
                r := http.get(f"/v1/sessions/{result.session_id}").json())["state"] == "ended" and r, 10)
        assert ended["endReason"] == "crashed"
    finally:
        await caller.close()
    recording = await asyncio.to_thread(ready_recording, recorded, result.session_id)
    assert recording["durationS"] >= 1.0
    _left, right, rate = await asyncio.to_thread(fetch_wav, recorded, result.session_id)
    assert np.abs(right).max() > 1000  # the greeting up to the kill
    assert "hello" in (await asyncio.to_thread(transcribe, right, rate)).lower()  # cut off by the kill


async def test_an_agent_that_does_not_record_has_no_file_and_the_404_says_why(recorded):
    caller = WebRTCCaller(recorded.url, agent="tone")
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
    finally:
        await caller.close()
    with recorded.client() as http:
        wait_for(lambda: http.get(f"/v1/sessions/{result.session_id}").json()["state"] == "ended", 10)
        await asyncio.sleep(0.5)
        reply = http.get(f"/v1/sessions/{result.session_id}/recording")
        unknown = http.get("/v1/sessions/no-such-session/recording")
        assert http.get(f"/v1/sessions/{result.session_id}").json()["recording"] is None
    assert reply.status_code == 404 and reply.json()["code"] == "RECORDING_OFF", reply.text
    assert "'tone' does not record" in reply.json()["error"]
    assert unknown.status_code == 404 and unknown.json()["code"] == "SESSION_NOT_FOUND"
    directory = Path(recorded.data_dir) / "recordings"
    assert not list(directory.glob(f"{result.session_id}*"))
