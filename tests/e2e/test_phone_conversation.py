"""Spoken conversations with the offline assistant over a phone call (Twilio Media Streams) and
over a generic WebSocket (Pipecat protobuf frames): the bot's words are checked by transcribing
the audio it sent, with the bundled Whisper."""

import asyncio

import pytest

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, wait_for
from voxfleet.bench import ws_client
from voxfleet.bench.speech import speak, transcribe
from voxfleet.bench.twilio_caller import TwilioCaller

pytestmark = pytest.mark.e2e


def record_of(server, session_id: str) -> dict:
    with server.client() as http:
        return wait_for(lambda: (r := http.get(f"/v1/sessions/{session_id}").json())["state"] == "ended" and r, 15)


async def test_phone_call_conversation(assistant_server):
    caller = TwilioCaller(assistant_server.url, TWILIO_AUTH_TOKEN, account_sid=TWILIO_ACCOUNT_SID)
    call_sid, answers = await caller.dial("assistant")
    question = speak("What is the capital of France?", sample_rate=8000)
    result = await caller.stream(answers[-1], call_sid, [question], listen_s=45)

    assert result.ttfw_ms is not None, "no greeting"
    assert len(result.v2v_ms) == 1, "the bot did not answer the question"
    heard = transcribe(result.pcm16(), 8000).lower()
    assert "assistant" in heard, heard  # the greeting: "Hello! I'm your voice assistant..."
    assert len(heard.split()) > 12, heard  # greeting plus an answer

    record = await asyncio.to_thread(record_of, assistant_server, answers[-1].parameters["session"])
    assert record["transport"] == "twilio" and record["endReason"] == "hangup"
    assert record["latency"]["ttfwMs"] > 0
    # the bot's own view of the call, read from its RTVI messages as for WebRTC calls
    said = [line["text"].lower() for line in record["transcript"] if line["role"] == "user"]
    assert any("capital" in s and "france" in s for s in said), record["transcript"]
    assert len(record["latency"]["turnsV2vMs"]) >= 1


async def test_websocket_conversation(assistant_server):
    question = speak("What is the capital of France?", sample_rate=16000)
    result = await ws_client.call(assistant_server.url, [question], listen_s=45)
    assert result.ttfw_ms is not None and len(result.v2v_ms) == 1
    heard = transcribe(result.pcm16(), result.sample_rate).lower()
    assert "assistant" in heard and len(heard.split()) > 12, heard
    record = await asyncio.to_thread(record_of, assistant_server, result.session_id)
    assert record["transport"] == "websocket"
    assert any("france" in line["text"].lower() for line in record["transcript"] if line["role"] == "user")
