"""``voxfleet bench flood``: one client floods ``POST /start``; does another still get served?

A real ``voxfleet serve`` (no --dev, defaults for every per-client bound) with the tone agent.
Clients are told apart by source address, as separate machines would be: the flood comes from
127.0.0.2, the measured caller from 127.0.0.3. First the caller makes ``calls`` sequential real
WebRTC calls on the idle server (start to first audio heard); then the flood runs as fast as one
client can send (``concurrency`` requests in flight, never connecting), while the caller makes
the same calls again. Printed: what the flood got (starts admitted, 429 by code, requests/s) and
the caller's start-to-first-audio p50/p95 idle and under the flood, with the ratio.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bench.harness import Served, percentile
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses

FLOODER, CALLER = "127.0.0.2", "127.0.0.3"


async def _call(url: str) -> float:
    caller = WebRTCCaller(url, local_address=CALLER)
    try:
        started = time.monotonic()
        await caller.connect()
        await caller.wait_first_audio(timeout=30)
        return (time.monotonic() - started) * 1000
    finally:
        await caller.close()


async def _calls(url: str, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        times.append(await _call(url))
        await asyncio.sleep(1.0)  # the caller's own rate bound (2/s) is not what is measured here
    return times


async def _flood(url: str, stop: asyncio.Event, concurrency: int) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    sent = 0
    started = time.monotonic()
    transport = httpx.AsyncHTTPTransport(local_address=FLOODER)
    async with httpx.AsyncClient(base_url=url, timeout=10, transport=transport,
                                 limits=httpx.Limits(max_connections=concurrency)) as http:
        async def worker() -> None:
            nonlocal sent
            while not stop.is_set():
                try:
                    reply = await http.post("/start", json={})
                    key = "admitted" if reply.status_code == 200 else (
                        f"429 {reply.json().get('code')}" if reply.status_code == 429 else f"http {reply.status_code}")
                except httpx.HTTPError as exc:
                    key = f"error {type(exc).__name__}"
                sent += 1
                outcomes[key] = outcomes.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"requests": sent, "seconds": round(elapsed, 1), "requests_per_s": round(sent / elapsed, 1),
            "admitted_per_s": round(outcomes.get("admitted", 0) / elapsed, 2), "outcomes": outcomes}


async def run_flood_bench(calls: int, concurrency: int) -> dict[str, Any]:
    advertise_addresses(["127.0.0.1"])
    server = Served([sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0", "--advertise", "127.0.0.1",
                     "--log-level", "WARNING", "--bot", str(Path(tone.__file__))],
                    {"VOXFLEET_CONFIG": "/nonexistent.toml"}, ready=r"voxfleet: ready, open (http://\S+)")
    try:
        url = await server.wait_ready()
        idle = await _calls(url, calls)
        stop = asyncio.Event()
        flood = asyncio.create_task(_flood(url, stop, concurrency))
        await asyncio.sleep(1.0)  # the flood is at full speed
        flooded = await _calls(url, calls)
        stop.set()
        flood_report = await flood
    finally:
        server.stop()
    report: dict[str, Any] = {
        "calls": calls, "flood": flood_report,
        "caller_start_to_audio_ms": {
            "idle": {"p50": percentile(idle, 0.5), "p95": percentile(idle, 0.95)},
            "flooded": {"p50": percentile(flooded, 0.5), "p95": percentile(flooded, 0.95)}},
    }
    ratio = percentile(flooded, 0.5) / percentile(idle, 0.5)
    report["ratio_p50"] = round(ratio, 2)
    report["text"] = "\n".join([
        f"one client floods POST /start ({concurrency} in flight) from {FLOODER}; another calls from {CALLER}",
        f"flood: {flood_report['requests']} requests in {flood_report['seconds']} s "
        f"({flood_report['requests_per_s']}/s), admitted {flood_report['admitted_per_s']}/s; "
        + ", ".join(f"{k}: {v}" for k, v in sorted(flood_report["outcomes"].items())),
        f"other caller, start -> first audio ({calls} calls each): idle p50 {percentile(idle, 0.5):.0f} ms "
        f"p95 {percentile(idle, 0.95):.0f} ms; during the flood p50 {percentile(flooded, 0.5):.0f} ms "
        f"p95 {percentile(flooded, 0.95):.0f} ms; ratio p50 {ratio:.2f}x",
    ])
    return report
