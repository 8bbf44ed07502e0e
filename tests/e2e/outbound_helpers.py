"""What the outbound-call e2e tests (``test_outbound*.py``: Twilio, Telnyx, Plivo) share: a real
`voxfleet serve` with room for exactly one warm tone bot, its carrier pointed at the test's
stand-in, and the dial / poll / settle steps each test takes."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any, Callable

import httpx

from tests.conftest import Server, wait_for

TONE_BOT = str(Path(__file__).parents[2] / "src/voxfleet/bots/tone.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tone_server(env: dict[str, str], *, public: bool = False) -> Server:
    """Room for exactly one tone bot (500 mCPU), kept warm: a second call at once finds no
    capacity; calls ring at most 5 s unless they ask otherwise. `public`: the server's
    ``public_url`` is its own loopback address (a carrier fetches a transfer's XML from it)."""
    port = ["--port", str(free_port())] if public else []
    return Server("--dev", "--bot", TONE_BOT, *port, env={
        **env, **({"VOXFLEET_PUBLIC_URL": f"http://127.0.0.1:{port[1]}"} if public else {}),
        "VOXFLEET_CAPACITY_CPU_MILLIS": "500", "VOXFLEET_TELEPHONY__RING_TIMEOUT_S": "5",
        "VOXFLEET_AGENTS": json.dumps([{"name": "tone", "bot": TONE_BOT, "min_warm": 1, "pool_policy": "fixed"}]),
    })


async def warm_and_free(server: Server) -> dict[str, Any]:
    """Once the call's reservation is released and the warm bot is back: the capacity snapshot."""
    def poll() -> dict[str, Any]:
        with server.client() as http:
            return wait_for(lambda: (c := http.get("/v1/capacity").json())["agents"]["tone"]["warm"] == 1
                            and c["agents"]["tone"]["active"] == 0 and c["reservations"] == 1 and c, 20)
    return await asyncio.to_thread(poll)


async def dial(server: Server, to: str, *, from_: str, carrier: str | None = None, **extra: Any) -> httpx.Response:
    """``POST /v1/agents/tone/calls`` (`carrier` left out: the default one)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post("/v1/agents/tone/calls",
                               json={"to": to, "from": from_, **({"carrier": carrier} if carrier else {}), **extra})


async def until(server: Server, call_id: str, predicate: Callable[[dict[str, Any]], bool],
                timeout: float = 20) -> dict[str, Any]:
    """The call (GET /v1/calls/{id}) once `predicate` holds for it (polled off the event loop)."""
    def poll() -> dict[str, Any]:
        with server.client() as http:
            return wait_for(lambda: predicate(c := http.get(f"/v1/calls/{call_id}").json()) and c, timeout)
    return await asyncio.to_thread(poll)


async def call_of(server: Server, call_id: str, state: str = "ended", timeout: float = 20) -> dict[str, Any]:
    """The call once it is in `state`."""
    return await until(server, call_id, lambda c: c["state"] == state, timeout)


async def transfer(server: Server, call_id: str, to: str, from_: str | None = None) -> httpx.Response:
    """``POST /v1/sessions/{id}/transfer`` (`from_` left out: the call's own caller id)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        return await http.post(f"/v1/sessions/{call_id}/transfer", json={"to": to, **({"from": from_} if from_ else {})})
