"""The Ray backend on a real multi-node Ray cluster (see the `ray_cluster` fixture): regions and
their fallback, warm pools per region, a WebRTC call to a bot on a worker node, the placement
bound, and a node that disappears mid-call."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_ENV, Server, ray_env, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.testing.ray_cluster import BotNode
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

TONE_BOT = Path(tone.__file__)
FAULTY_TONE_BOT = Path(__file__).parent / "bots" / "faulty_tone.py"  # the tone bot, made to raise or hold memory
PLACEMENT_TIMEOUT_S = 4.0

# Another Ray workload (not voxfleet) that holds CPU on one node: voxfleet's ledger does not
# know of it, so a bot it sends there cannot be placed by Ray.
HOLD_CPU = """
import sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], logging_level="ERROR")
node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == sys.argv[2])
@ray.remote(num_cpus=float(sys.argv[3]), scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
class Hold:
    def ping(self):
        return 1
hold = Hold.remote()
ray.get(hold.ping.remote())
print("holding", flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def ray_server(ray_cluster, tmp_path_factory):
    """tone (one warm bot per region; eu falls back to us, us to nothing), big (agent-3x:
    bigger than every node) and plain (no warm bots)."""
    advertise_addresses(["127.0.0.1"])
    config = tmp_path_factory.mktemp("ray") / "voxfleet.toml"
    config.write_text("\n".join([
        "queue_max = 1", "queue_wait_s = 30.0", "offer_timeout_s = 120.0",
        "[[agents]]", 'name = "tone"', f'bot = "{FAULTY_TONE_BOT}"', "min_warm = 1", 'pool_policy = "fixed"',
        "[[agents]]", 'name = "big"', f'bot = "{TONE_BOT}"', 'profile = "agent-3x"', "min_warm = 0",
        'pool_policy = "fixed"',
        "[[agents]]", 'name = "plain"', f'bot = "{TONE_BOT}"', "min_warm = 0", "warm_pct = 0", 'pool_policy = "fixed"',
    ]) + "\n")
    server = Server(env={"VOXFLEET_CONFIG": str(config), **TWILIO_ENV,
                         **ray_env(ray_cluster, nearest_regions={"eu": ["us"], "us": []},
                                   placement_timeout_s=str(PLACEMENT_TIMEOUT_S))})
    yield server
    server.stop()


def capacity(server: Server) -> dict:
    with server.client() as http:
        return http.get("/v1/capacity").json()


def session(server: Server, session_id: str) -> dict:
    with server.client() as http:
        return http.get(f"/v1/sessions/{session_id}").json()


def warm_everywhere(server: Server, timeout: float = 60) -> dict:
    return wait_for(lambda: (c := capacity(server))["agents"]["tone"]["warm_by_region"] == {"eu": 1, "us": 1}
                    and not c["agents"]["tone"]["warming"] and c, timeout=timeout, interval=0.2)


def hang_up_all(server: Server, session_ids: list[str]) -> None:
    with server.client() as http:
        for session_id in session_ids:
            http.delete(f"/v1/sessions/{session_id}")
    for session_id in session_ids:
        wait_for(lambda: session(server, session_id)["state"] == "ended", timeout=15)


async def test_call_to_a_warm_bot_on_a_worker_node_in_the_asked_region(ray_server):
    cap = warm_everywhere(ray_server)
    assert {n["address"]: n["region"] for n in cap["nodes"].values()} == {"127.0.0.3": "eu", "127.0.0.4": "us"}
    assert cap["regions"]["us"]["capacity"] == {"cpu_millis": 1000, "mem_mb": 2048, "kbps": 40}
    assert cap["invariant_ok"] and cap["reservations"] == 2  # the two warm bots

    caller = WebRTCCaller(ray_server.url, region="us")
    try:
        result = await caller.connect()
        assert await caller.wait_first_audio(timeout=20) > 0  # media straight from the bot on 127.0.0.4
        record = session(ray_server, result.session_id)
        assert (record["regionRequested"], record["region"], record["node"]) == ("us", "us", "127.0.0.4")
        assert record["start"] == "warm" and record["botStartMs"] < 1000
        assert "127.0.0.4" in caller.result.answer_sdp
    finally:
        await caller.close()
    record = wait_for(lambda: (r := session(ray_server, result.session_id))["state"] == "ended" and r, timeout=10)
    assert record["endReason"] == "hangup" and record["exitCode"] == 0


async def test_phone_call_to_a_bot_actor_in_the_numbers_region(ray_server):
    """A Twilio media stream relayed to a bot actor on a worker node; ?region= on the webhook URL."""
    from voxfleet.bench.twilio_caller import TwilioCaller

    await asyncio.to_thread(warm_everywhere, ray_server)
    caller = TwilioCaller(ray_server.url, TWILIO_AUTH_TOKEN, account_sid=TWILIO_ACCOUNT_SID)
    call_sid, answers = await caller.dial("tone?region=eu")
    result = await caller.stream(answers[-1], call_sid, [], listen_s=8)
    assert result.ttfw_ms is not None and result.frames_in > 0 and result.close_code == 1000
    session_id = answers[-1].parameters["session"]
    record = await asyncio.to_thread(
        wait_for, lambda: (r := session(ray_server, session_id))["state"] == "ended" and r, 10)
    assert (record["transport"], record["region"], record["node"]) == ("twilio", "eu", "127.0.0.3")
    assert record["endReason"] == "hangup" and record["endDetail"] == "caller sent stop"
    assert record["latency"]["ttfwMs"] > 0
    relay = record["latency"]["relayMs"]  # one machine: one clock, so the relay is measured here too
    assert relay["inbound"]["frames"] > 10 and relay["outbound"]["frames"] > 0
    # a number sent to a region no node serves: told goodbye, not a dead line or an error page
    _sid, nowhere = await caller.dial("tone?region=mars")
    assert nowhere[-1].hangup and nowhere[-1].says


async def test_a_bot_that_raises_ends_bot_error_and_the_next_call_works(ray_server):
    warm_everywhere(ray_server)
    failing = WebRTCCaller(ray_server.url, body={"fail": True}, region="eu")
    try:
        result = await failing.connect()
        record = wait_for(lambda: (r := session(ray_server, result.session_id))["state"] == "ended" and r, timeout=15)
    finally:
        await failing.close()
    assert record["endReason"] == "bot_error" and record["exitCode"] == 1
    assert "tone bot was asked to fail" in record["endDetail"]
    follow_up = WebRTCCaller(ray_server.url, region="eu")
    try:
        await follow_up.connect()
        assert await follow_up.wait_first_audio(timeout=20) > 0
    finally:
        await follow_up.close()


def test_region_preference_fallback_queue_and_429(ray_server):
    warm_everywhere(ray_server)
    started = []
    with ray_server.client() as http:
        # eu: its warm bot, then the bot that replaced it at once (eu's second slot); then eu is
        # full: us, its nearest region
        for _ in range(3):
            reply = http.post("/start", json={"region": "eu"})
            assert reply.status_code == 200 and not reply.json().get("queued"), reply.text
            started.append(reply.json()["sessionId"])
            wait_for(lambda: not capacity(ray_server)["agents"]["tone"]["warming"], timeout=30, interval=0.2)
        records = [wait_for(lambda s=s: (r := session(ray_server, s))["node"] and r, timeout=30) for s in started]
        assert [(r["region"], r["start"]) for r in records] == [("eu", "warm"), ("eu", "warm"), ("us", "warm")]
        assert [r["node"] for r in records] == ["127.0.0.3", "127.0.0.3", "127.0.0.4"]

        by_header = http.post("/start", json={}, headers={"X-Voxfleet-Region": "us"})
        assert by_header.json()["queued"] is True and by_header.json()["queuePosition"] == 1
        assert session(ray_server, by_header.json()["sessionId"])["regionRequested"] == "us"
        rejected = http.post("/start", json={"region": "eu"})
        assert rejected.status_code == 429 and rejected.json()["code"] == "AT_CAPACITY"
        assert int(rejected.headers["Retry-After"]) >= 1
        cap = capacity(ray_server)
        assert cap["regions"]["eu"]["free"]["cpu_millis"] == 0 and cap["regions"]["us"]["free"]["kbps"] == 0
        assert cap["agents"]["tone"]["active_by_region"] == {"eu": 2, "us": 1} and cap["invariant_ok"]

    # The us session ends: the one queued for us gets its place (us falls back to nothing).
    hang_up_all(ray_server, [started[2]])
    queued = wait_for(lambda: (r := session(ray_server, by_header.json()["sessionId"]))["node"] and r, timeout=30)
    assert queued["region"] == "us" and "dequeued" in queued["timingsMs"]
    hang_up_all(ray_server, started[:2] + [queued["sessionId"]])
    cap = warm_everywhere(ray_server)
    assert cap["reservations"] == 2 and cap["invariant_ok"]


def test_what_no_node_can_run_is_refused_at_once(ray_server):
    with ray_server.client() as http:
        began = time.monotonic()
        unknown = http.post("/start", json={"region": "mars"})
        too_big = http.post("/v1/public/big/start", json={})
        elapsed = time.monotonic() - began
    assert unknown.status_code == 422 and unknown.json()["code"] == "UNPLACEABLE"
    assert unknown.json()["error"] == "region: no node in region 'mars' (regions now: eu, us)"
    assert too_big.status_code == 422 and too_big.json()["code"] == "UNPLACEABLE"
    assert "agent big: its profile (cpu_millis 1500, mem_mb 3072, kbps 40) is bigger than every node" in \
        too_big.json()["error"]
    assert elapsed < 2


def test_a_placement_ray_cannot_make_is_answered_after_the_bound(ray_server, ray_cluster):
    warm_everywhere(ray_server)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CPU, ray_cluster.address, "127.0.0.3", "0.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with ray_server.client() as http:
            began = time.monotonic()
            # plain keeps no warm bot: a cold start where the ledger says eu has room (beside tone's
            # warm bot), but the other workload holds that CPU
            cold = http.post("/start", json={"agent": "plain", "region": "eu"}).json()["sessionId"]
            offer = http.post(f"/sessions/{cold}/api/offer", json={"sdp": "v=0\r\n", "type": "offer"})
            record = wait_for(lambda: (r := session(ray_server, cold))["state"] == "ended" and r, timeout=30)
            waited = time.monotonic() - began
        assert record["endReason"] == "unplaceable"
        assert f"within {PLACEMENT_TIMEOUT_S:.0f}s (placement_timeout_s)" in record["endDetail"]
        assert PLACEMENT_TIMEOUT_S - 0.5 < waited < PLACEMENT_TIMEOUT_S + 10
        assert offer.status_code in (400, 422), offer.text
    finally:
        holder.kill()
        holder.wait()
    cap = warm_everywhere(ray_server)  # once the other workload is gone, eu warms up again
    assert cap["invariant_ok"] and cap["reservations"] == 2


async def test_a_node_that_disappears_ends_its_sessions_with_node_lost(ray_server, ray_cluster):
    ray_cluster.add(BotNode("127.0.0.5", "ap", 1.0, 2048, kbps=40))  # joins while voxfleet runs
    wait_for(lambda: capacity(ray_server)["agents"]["tone"]["warm_by_region"].get("ap") == 1, timeout=60,
             interval=0.2)
    caller = WebRTCCaller(ray_server.url, region="ap")
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
        assert session(ray_server, result.session_id)["node"] == "127.0.0.5"
        assert capacity(ray_server)["regions"]["ap"]["reservations"] == 1
        removed_at = time.monotonic()
        ray_cluster.remove("127.0.0.5")
        record = wait_for(lambda: (r := session(ray_server, result.session_id))["state"] == "ended" and r,
                          timeout=20, interval=0.1)
        lost_after = time.monotonic() - removed_at
    finally:
        await caller.close()
    assert record["endReason"] == "node_lost", record["endDetail"]
    assert "127.0.0.5" in record["endDetail"]
    assert lost_after < 10
    cap = wait_for(lambda: (c := capacity(ray_server))["reservations"] == 2 and "ap" not in c["regions"] and c,
                   timeout=10)
    assert cap["orphaned"] == 0 and cap["invariant_ok"] and set(cap["regions"]) == {"eu", "us"}
    assert cap["capacity"]["kbps"] == 1040  # eu + us again
