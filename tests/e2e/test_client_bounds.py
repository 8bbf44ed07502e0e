"""Per-client bounds and signaling checks against a real `voxfleet serve` (no --dev).

Clients are told apart by source address: each test client binds its own loopback address
(127.0.0.2, 127.0.0.3, ...), as separate machines would be.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

OFFER_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory):
    """Room for 4 tone bots; per client: burst 5, 1 start/s, 2 sessions not yet connected, half
    of capacity and of the queue."""
    advertise_addresses(["127.0.0.1"])
    config = tmp_path_factory.mktemp("bounds") / "voxfleet.toml"
    config.write_text(f"capacity_cpu_millis = 2000\nqueue_max = 4\nqueue_wait_s = 5\n"
                      f"offer_timeout_s = {OFFER_TIMEOUT_S}\nclient_burst = 5\nclient_rate_per_s = 1\n"
                      f"client_max_pending = 2\nclient_share = 0.5\n"
                      f'[[agents]]\nname = "tone"\nbot = "{Path(tone.__file__)}"\nmin_warm = 1\n'
                      'pool_policy = "fixed"\n')
    server = Server(env={"VOXFLEET_CONFIG": str(config)})
    yield server
    server.stop()


def client_at(server: Server, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=10,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


def reservations_settle(server: Server) -> dict:
    """Wait until only the warm pool holds capacity (every started session gone)."""
    with server.client() as http:
        return wait_for(lambda: (c := http.get("/v1/capacity").json())["agents"]["tone"]["active"] == 0
                        and c["agents"]["tone"]["warm"] == 1 and c, timeout=OFFER_TIMEOUT_S + 15)


async def call_time(server: Server, address: str) -> float:
    """A real call from `address`: seconds from /start to the first tone heard."""
    caller = WebRTCCaller(server.url, local_address=address)
    try:
        started = time.monotonic()
        await caller.connect()
        await caller.wait_first_audio(timeout=20)
        return time.monotonic() - started
    finally:
        await caller.close()


async def test_a_flooding_client_is_held_off_and_another_still_gets_a_bot(bounded_server):
    server = bounded_server
    reservations_settle(server)
    idle = await call_time(server, "127.0.0.3")
    reservations_settle(server)
    async with client_at(server, "127.0.0.2") as flood:
        replies = await asyncio.gather(*(flood.post("/start", json={}) for _ in range(30)))
        during = await call_time(server, "127.0.0.3")  # while the flood's sessions hold what they got
        more = [await flood.post("/start", json={}) for _ in range(5)]
    started = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies + more if r.status_code == 429]
    assert len(started) == 2, [r.text for r in replies]  # its sessions not yet connected: at most 2
    assert len(refused) == len(replies) + len(more) - 2
    codes = {r.json()["code"] for r in refused}
    assert codes <= {"TOO_MANY_PENDING", "RATE_LIMITED"} and "TOO_MANY_PENDING" in codes, codes
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert any("127.0.0.2" in r.json()["error"] for r in refused)
    print(f"\nanother client's call, /start to first audio: idle {idle * 1000:.0f} ms, "
          f"while one client floods {during * 1000:.0f} ms")
    # an offerless start holds its reservation only for offer_timeout_s
    settled = reservations_settle(server)
    assert settled["invariant_ok"]
    with server.client() as http:
        for reply in started:
            record = http.get(f"/v1/sessions/{reply.json()['sessionId']}").json()
            assert record["state"] == "ended" and record["endReason"] == "timeout", record


async def test_one_client_holds_at_most_its_share_of_capacity(bounded_server):
    server = bounded_server
    reservations_settle(server)
    await asyncio.sleep(2.5)  # the rate bucket of 127.0.0.4 is full anyway; be gentle with the others
    callers = [WebRTCCaller(server.url, local_address="127.0.0.4") for _ in range(3)]
    try:
        for caller in callers[:2]:
            await caller.connect()
            await caller.wait_first_audio(timeout=20)
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await callers[2].connect()
        reply = refused.value.response
        assert reply.status_code == 429 and reply.json()["code"] == "CLIENT_SHARE", reply.text
        assert "127.0.0.4" in reply.json()["error"] and "share of capacity" in reply.json()["error"]
        assert await call_time(server, "127.0.0.5") < 20  # capacity is left for everyone else
    finally:
        for caller in callers:
            await caller.close()


async def test_signaling_refuses_what_the_session_is_not(bounded_server):
    """An offer for a WebSocket session, an ICE PATCH for a pc_id the session does not have, an
    offer for an ended session: 404/409 naming it, never a 5xx or a second pipeline."""
    server = bounded_server
    reservations_settle(server)
    async with client_at(server, "127.0.0.6") as http:
        ws = await http.post("/start", json={"transport": "websocket"})
        assert ws.status_code == 200, ws.text
        ws_session = ws.headers["X-Voxfleet-Session-Id"]
        caller = WebRTCCaller(server.url, local_address="127.0.0.7")
        try:
            result = await caller.connect()
            await caller.wait_first_audio(timeout=20)  # a live call
            offer = {"sdp": caller.pc.localDescription.sdp, "type": "offer"}
            reply = await http.post(f"/sessions/{ws_session}/api/offer", json=offer)
            assert reply.status_code == 409 and "websocket session (transport)" in reply.json()["error"], reply.text
            for pc_id in ("", "not-its-pc"):
                reply = await http.patch(f"/sessions/{result.session_id}/api/offer",
                                         json={"pc_id": pc_id, "candidates": []})
                assert reply.status_code == 404 and reply.json()["code"] == "PEER_NOT_FOUND", reply.text
            reply = await http.post(f"/sessions/{result.session_id}/api/offer", json=offer)
            assert reply.status_code == 409, reply.text  # it has its peer connection already
        finally:
            await caller.close()
        with server.client() as admin:
            admin.delete(f"/v1/sessions/{ws_session}")
            wait_for(lambda: admin.get(f"/v1/sessions/{result.session_id}").json()["state"] == "ended", 15)
        reply = await http.post(f"/sessions/{result.session_id}/api/offer", json=offer)
        assert reply.status_code == 409 and "ended" in reply.json()["error"], reply.text
