"""Capacity with real bot processes: queueing, 429 at capacity, release on kill -9, memory limit, drain.

The two-slot tests run on both backends: bots forked on this machine, and bot actors on a real
Ray cluster (sessions held to its eu node, which has room for exactly two agent-1x bots)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Server, ray_env, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

TONE_BOT = Path(tone.__file__)
FAULTY_TONE_BOT = Path(__file__).parent / "bots" / "faulty_tone.py"  # the tone bot, made to raise or hold memory


def tone_server(tmp_path, env: dict[str, str] | None = None, **settings) -> Server:
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    lines += ["[[agents]]", 'name = "tone"', f'bot = "{FAULTY_TONE_BOT}"', "min_warm = 0", 'pool_policy = "fixed"']
    config = tmp_path / "voxfleet.toml"
    config.write_text("\n".join(lines) + "\n")
    return Server(env={"VOXFLEET_CONFIG": str(config), **(env or {})})


@pytest.fixture(scope="module", params=["local", "ray"])
def two_slot_server(request, tmp_path_factory):
    """Room for exactly two agent-1x bots (1 vCPU), a queue of one."""
    advertise_addresses(["127.0.0.1"])
    if request.param == "ray":
        cluster = request.getfixturevalue("ray_cluster")
        server = tone_server(tmp_path_factory.mktemp("cap"), queue_max=1, queue_wait_s=20.0, memory_check_s=0.5,
                             env=ray_env(cluster, default_region="eu", nearest_regions={"eu": []}))
        server.region = "eu"
    else:
        server = tone_server(tmp_path_factory.mktemp("cap"), capacity_cpu_millis=1000, queue_max=1,
                             queue_wait_s=20.0, memory_check_s=0.5)
        server.region = "local"
    yield server
    server.stop()


def capacity(server: Server) -> dict:
    with server.client() as http:
        return http.get("/v1/capacity").json()


def session(server: Server, session_id: str) -> dict:
    with server.client() as http:
        return http.get(f"/v1/sessions/{session_id}").json()


def ended(server: Server, session_id: str, timeout: float = 10) -> dict:
    return wait_for(lambda: (r := session(server, session_id))["state"] == "ended" and r, timeout=timeout)


async def test_third_session_queues_fourth_gets_429_and_queue_proceeds(two_slot_server):
    server = two_slot_server
    # the operator's key: these fill capacity from one address, which anonymous callers may not
    first, second = WebRTCCaller(server.url, headers=server.headers), WebRTCCaller(server.url, headers=server.headers)
    third = WebRTCCaller(server.url, headers=server.headers)
    try:
        for caller in (first, second):
            await caller.connect()
            await caller.wait_first_audio(timeout=20)
        cap = capacity(server)
        assert cap["regions"][server.region]["free"]["cpu_millis"] == 0 and cap["invariant_ok"]
        assert cap["agents"]["tone"]["active"] == 2

        with server.client() as http:
            queued = http.post("/start", json={"transport": "webrtc"}).json()
            assert queued["queued"] is True and queued["queuePosition"] == 1
            assert session(server, queued["sessionId"])["queuePosition"] == 1
            rejected = http.post("/start", json={"transport": "webrtc"})
            assert rejected.status_code == 429
            assert rejected.json()["code"] == "AT_CAPACITY"
            assert "queue is full" in rejected.json()["error"]
            assert int(rejected.headers["Retry-After"]) >= 1
            http.delete(f"/v1/sessions/{queued['sessionId']}")  # leave the queue
            assert ended(server, queued["sessionId"])["endReason"] == "hangup"

        # A caller who queues with the official flow (start, then offer) is held, then served.
        import asyncio

        connecting = asyncio.create_task(third.connect())
        await asyncio.sleep(1.0)
        assert not connecting.done()
        third_id = third.result.session_id
        assert session(server, third_id)["state"] == "queued"
        await first.close()
        await asyncio.wait_for(connecting, 20)
        assert await third.wait_first_audio(timeout=20) > 0
        record = session(server, third_id)
        assert record["start"] == "cold" and "dequeued" in record["timingsMs"]
    finally:
        for caller in (first, second, third):
            await caller.close()
    wait_for(lambda: capacity(server)["reservations"] == 0, timeout=10)
    assert capacity(server)["invariant_ok"]


async def test_kill_9_releases_the_reservation(two_slot_server):
    server = two_slot_server
    caller = WebRTCCaller(server.url)
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
        assert capacity(server)["reservations"] == 1
        os.kill(session(server, result.session_id)["pid"], signal.SIGKILL)
        assert ended(server, result.session_id)["endReason"] == "crashed"
    finally:
        await caller.close()
    cap = wait_for(lambda: (c := capacity(server))["reservations"] == 0 and c, timeout=5)
    assert cap["free"] == cap["capacity"] and cap["invariant_ok"]


async def test_bot_over_its_memory_limit_is_ended(two_slot_server):
    server = two_slot_server
    caller = WebRTCCaller(server.url, body={"hog_mb": 1300})  # agent-1x reserves 1024 MiB
    try:
        result = await caller.connect()
        record = ended(server, result.session_id, timeout=20)
    finally:
        await caller.close()
    assert record["endReason"] == "memory_limit"
    assert wait_for(lambda: capacity(server)["reservations"] == 0, timeout=5)


async def test_sigterm_drains_running_sessions_then_exits(tmp_path):
    server = tone_server(tmp_path, drain_timeout_s=20.0)
    caller = WebRTCCaller(server.url)
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
        server.proc.send_signal(signal.SIGTERM)
        with server.client() as http:
            health = wait_for(lambda: (h := http.get("/healthz")).status_code == 503 and h, timeout=5)
            assert health.json()["checks"]["accepting"] is False
            refused = http.post("/start", json={})
            assert refused.status_code == 503 and refused.json()["code"] == "NOT_READY"
            assert http.get(f"/v1/sessions/{result.session_id}").json()["state"] == "active"
        assert server.proc.poll() is None  # still serving the live call
        await caller.close()
        started = time.monotonic()
        server.proc.wait(timeout=15)
        assert time.monotonic() - started < 15
        assert server.proc.returncode == 0
    finally:
        await caller.close()
        server.stop()


def test_taking_a_warm_bot_starts_its_replacement_at_once(tmp_path):
    """min_warm = 1: while the first call still runs, the pool is warm again for the next."""
    lines = ["[[agents]]", 'name = "tone"', f'bot = "{TONE_BOT}"', "min_warm = 1", 'pool_policy = "fixed"']
    (tmp_path / "voxfleet.toml").write_text("\n".join(lines) + "\n")
    server = Server(env={"VOXFLEET_CONFIG": str(tmp_path / "voxfleet.toml")})
    try:
        wait_for(lambda: capacity(server)["agents"]["tone"]["warm"] == 1, timeout=30)
        with server.client() as http:
            first = http.post("/start", json={}).json()["sessionId"]
            wait_for(lambda: capacity(server)["agents"]["tone"]["warm"] == 1, timeout=15)
            assert session(server, first)["state"] != "ended"  # the first call is still live
            second = http.post("/start", json={}).json()["sessionId"]
            assert [session(server, s)["start"] for s in (first, second)] == ["warm", "warm"]
            for s in (first, second):
                http.delete(f"/v1/sessions/{s}")
    finally:
        server.stop()
