"""`voxfleet serve --bot path/to/bot.py` serves a user's unchanged Pipecat bot; session endings.
On both backends: bots forked here, and bot actors on a real Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Server, ray_env, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

FAULTY_TONE_BOT = Path(__file__).parent / "bots" / "faulty_tone.py"  # the tone bot, made to raise or hold memory


@pytest.fixture(scope="module", params=["local", "ray"])
def tone_server(request):
    advertise_addresses(["127.0.0.1"])
    env = ray_env(request.getfixturevalue("ray_cluster")) if request.param == "ray" else {}
    server = Server("--bot", str(FAULTY_TONE_BOT), env={"VOXFLEET_OFFER_TIMEOUT_S": "2", **env})
    yield server
    server.stop()


def ended(server: Server, session_id: str) -> dict:
    with server.client() as http:
        return wait_for(lambda: (r := http.get(f"/v1/sessions/{session_id}").json())["state"] == "ended" and r,
                        timeout=10)


def test_agents_lists_the_user_bot(tone_server):
    with tone_server.client() as http:
        agents = http.get("/v1/agents").json()["agents"]
    assert [a["name"] for a in agents] == ["faulty-tone"]  # from the file's stem


async def test_user_bot_answers_and_hang_up_is_recorded(tone_server):
    caller = WebRTCCaller(tone_server.url)
    try:
        result = await caller.connect()
        assert await caller.wait_first_audio(timeout=20) > 0
        with tone_server.client() as http:
            assert http.get(f"/v1/sessions/{result.session_id}").json()["state"] == "active"
            http.delete(f"/v1/sessions/{result.session_id}")
        record = ended(tone_server, result.session_id)
    finally:
        await caller.close()
    assert record["endReason"] == "hangup"
    assert record["exitCode"] == 0


async def test_bot_exception_is_bot_error(tone_server):
    caller = WebRTCCaller(tone_server.url, body={"fail": True})
    try:
        result = await caller.connect()
        record = ended(tone_server, result.session_id)
    finally:
        await caller.close()
    assert record["endReason"] == "bot_error"
    assert "RuntimeError: tone bot was asked to fail" in record["endDetail"]
    assert record["exitCode"] == 1


def test_session_without_offer_times_out(tone_server):
    with tone_server.client() as http:
        session_id = http.post("/start", json={}).json()["sessionId"]
    record = ended(tone_server, session_id)
    assert record["endReason"] == "timeout"


def test_ended_session_rejects_offer_with_409(tone_server):
    with tone_server.client() as http:
        session_id = http.post("/start", json={}).json()["sessionId"]
        http.delete(f"/v1/sessions/{session_id}")
        ended(tone_server, session_id)
        from tests.e2e.test_failures import _audio_offer

        reply = http.post(f"/sessions/{session_id}/api/offer", json={"sdp": _audio_offer(), "type": "offer"})
    assert reply.status_code == 409
    assert reply.json()["code"] == "SESSION_CONFLICT"
    assert "ended (hangup)" in reply.json()["error"]


def test_a_region_no_node_has_is_422_naming_the_regions(tone_server):
    with tone_server.client() as http:
        reply = http.post("/start", json={"region": "mars"})
        by_header = http.post("/start", json={}, headers={"X-Voxfleet-Region": "mars"})
    assert reply.status_code == 422 and reply.json()["code"] == "UNPLACEABLE"
    assert reply.json()["error"].startswith("region: no node in region 'mars' (regions now: ")
    assert by_header.status_code == 422 and by_header.json() == reply.json()
