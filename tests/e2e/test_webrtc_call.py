"""End to end with a real WebRTC peer (aiortc) against the offline assistant."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wait_for
from voxfleet.bench.speech import speak
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True, scope="module")
def loopback_ice():
    advertise_addresses(["127.0.0.1"])


async def test_spoken_conversation(assistant_server):
    question = speak("What is the capital of France?")
    caller = WebRTCCaller(assistant_server.url)
    try:
        result = await caller.connect()
        # The greeting arrives as real, non-silent audio, and its text over RTVI.
        ttfw = await caller.wait_first_audio(timeout=30)
        assert ttfw > 0
        await caller.wait_rtvi(lambda m: m.get("type") == "bot-output" and "assistant" in m["data"].get("text", ""),
                               timeout=15)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)

        spoken_at = await caller.say(question)
        # Our words come back in the RTVI user transcript...
        heard = await caller.wait_rtvi(
            lambda m: m.get("type") == "user-transcription" and m["data"].get("final"), timeout=30)
        words = heard["data"]["text"].lower()
        assert "capital" in words and "france" in words, words
        # ...and the bot answers with non-silent audio after we stopped speaking.
        reply_delay = await caller.wait_bot_audio_after(spoken_at, timeout=30)
        assert reply_delay > 0
        answer = await caller.wait_rtvi(
            lambda m: m.get("type") == "bot-output" and "assistant" not in m["data"].get("text", "")
            and m["data"].get("text", "").strip(), timeout=30)
        assert answer["data"]["text"].strip()
    finally:
        await caller.close()

    with assistant_server.client() as http:
        record = wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())["state"] == "ended" and r,
                          timeout=10)
    assert record["endReason"] == "hangup"
    assert record["exitCode"] == 0
    assert {"bot_assigned", "answered", "client_connected"} <= set(record["timingsMs"])
    assert record["start"] in ("warm", "cold") and record["botStartMs"] >= 0
    # The bot's own view of the call, from its RTVI messages: latencies and transcript.
    latency = record["latency"]
    assert latency["ttfwMs"] > 0 and len(latency["turnsV2vMs"]) >= 1 and latency["v2vP50Ms"] > 0
    assert latency["ttfbP50Ms"], latency
    roles = [line["role"] for line in record["transcript"]]
    assert roles[0] == "bot" and "user" in roles and roles.count("bot") >= 2, record["transcript"]
    assert any("france" in line["text"].lower() for line in record["transcript"] if line["role"] == "user")

    with assistant_server.client() as http:
        metrics = http.get("/metrics").text
    assert 'voxfleet_sessions_ended_total{agent="assistant",reason="hangup"}' in metrics
    assert "voxfleet_voice_to_voice_seconds_count" in metrics
    assert 'voxfleet_capacity_free{resource="cpu_millis"}' in metrics
    assert 'voxfleet_warm_bots{agent="assistant"}' in metrics


def thread_nices(pid: int) -> set[int]:
    """The nice values of `pid`'s threads (Linux keeps one per thread)."""
    import os

    nices = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            nices.add(int(stat.read().rsplit(")", 1)[1].split()[16]))
    return nices


async def test_each_session_gets_a_fresh_process(assistant_server):
    pids = []
    for _ in range(2):
        # A warm bot waits at the configured warm_nice (10), so a refill during a call takes only
        # idle CPU; the bot that takes the session runs every thread at 0 again.
        with assistant_server.client() as http:
            pool = wait_for(lambda: (p := http.get("/v1/capacity").json()["agents"]["assistant"])["warm"]
                            and not p["warming"] and p, timeout=60)
        assert all(thread_nices(pid) == {10} for pid in pool["warm_pids"]), pool
        caller = WebRTCCaller(assistant_server.url)
        try:
            result = await caller.connect()
            await caller.wait_first_audio(timeout=30)
            with assistant_server.client() as http:
                live = http.get(f"/v1/sessions/{result.session_id}").json()
            if live["start"] == "warm":
                assert thread_nices(live["pid"]) == {0}
        finally:
            await caller.close()
        with assistant_server.client() as http:
            record = wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())["state"] == "ended" and r,
                              timeout=10)
        pids.append(record["pid"])
    assert pids[0] != pids[1]
    assert all(isinstance(p, int) for p in pids)


def test_speech_helper_makes_audible_speech():
    pcm = speak("Hello there.")
    assert len(pcm) > 48000 * 0.4
    assert np.abs(pcm).max() > 3000
