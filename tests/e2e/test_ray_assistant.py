"""The offline assistant served on Ray: a spoken conversation with a bot actor on a worker node,
its latencies and transcript observed through the actor (RTVI), as on the local backend."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Server, ray_env, wait_for
from voxfleet.bench.speech import speak
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.config import BUILTIN_ASSISTANT
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ray_assistant(ray_cluster):
    advertise_addresses(["127.0.0.1"])
    # the cluster's nodes have 1 vCPU each: the assistant at the smallest profile (its default,
    # agent-3x, is what one call takes on a local 2-core node) so that a bot actor fits
    agents = json.dumps([{"name": "assistant", "bot": BUILTIN_ASSISTANT, "profile": "agent-1x"}])
    server = Server(env={**ray_env(ray_cluster, default_region="eu"), "VOXFLEET_AGENTS": agents})
    yield server
    server.stop()


async def test_spoken_conversation_with_a_bot_actor(ray_assistant):
    with ray_assistant.client() as http:
        wait_for(lambda: http.get("/v1/capacity").json()["agents"]["assistant"]["warm_by_region"].get("eu"),
                 timeout=90, interval=0.2)
    caller = WebRTCCaller(ray_assistant.url)
    try:
        result = await caller.connect()
        assert await caller.wait_first_audio(timeout=30) > 0
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)
        spoken_at = await caller.say(speak("What is the capital of France?"))
        assert await caller.wait_bot_audio_after(spoken_at, timeout=30) > 0
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=30)
    finally:
        await caller.close()
    with ray_assistant.client() as http:
        record = wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())["state"] == "ended"
                          and r, timeout=10)
    assert (record["endReason"], record["region"], record["node"], record["start"]) == (
        "hangup", "eu", "127.0.0.3", "warm")
    latency = record["latency"]
    assert latency["ttfwMs"] > 0 and len(latency["turnsV2vMs"]) >= 1 and latency["ttfbP50Ms"], latency
    assert any("france" in line["text"].lower() for line in record["transcript"] if line["role"] == "user")
    assert [line["role"] for line in record["transcript"]][0] == "bot"
