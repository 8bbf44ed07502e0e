"""``voxfleet bench start``: warm vs cold starts, assignment latency, bot memory, and a burst.

- warm / cold: N sequential sessions of the offline assistant against a server that keeps one
  warm bot (``min_warm = 1``, fixed policy) and against one that keeps none (every session forks
  from the template). Time to first word as in ``bench ttfw``; assignment latency = the
  session's ``botStartMs`` (start request -> a bot owns the session); PSS of an idle warm bot and
  of a bot in a live session, from ``/proc/<pid>/smaps_rollup``.
- burst: 10x capacity of simultaneous ``POST /start`` against a server with room for 2 bots
  (a model-free bot): how many were started, queued and refused (429), time to each answer,
  and that none went unanswered.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bench.harness import Served, percentile, pool_settled
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.runtime.local.node import pss_mb
from voxfleet.transports.ice import advertise_addresses

TONE_BOT = Path(tone.__file__)


def _serve(config: str) -> Served:
    path = Path(tempfile.mkdtemp(prefix="voxfleet-bench-")) / "voxfleet.toml"
    path.write_text(config)
    return Served([sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0", "--advertise", "127.0.0.1",
                   "--log-level", "WARNING"], {"VOXFLEET_CONFIG": str(path)},
                  ready=r"voxfleet: ready, open (http://\S+)")


async def start_series(sessions: int, min_warm: int) -> dict[str, Any]:
    server = _serve(f'[[agents]]\nname = "assistant"\nbot = "voxfleet.bots.assistant"\n'
                    f'min_warm = {min_warm}\npool_policy = "fixed"\n')
    ttfw, assign, live_pss, idle_pss, kinds = [], [], [], [], []
    try:
        url = await server.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=server.headers) as http:
            for index in range(sessions):
                if min_warm:
                    pids = (await pool_settled(http, "assistant", 1, timeout=30))["warm_pids"]
                    idle_pss.append(pss_mb(pids[0]) or float("nan"))
                else:
                    await asyncio.sleep(1.0)
                caller = WebRTCCaller(url)
                try:
                    result = await caller.connect()
                    ttfw.append(await caller.wait_first_audio(timeout=30))
                    record = (await http.get(f"/v1/sessions/{result.session_id}")).json()
                    assign.append(record["botStartMs"])
                    kinds.append(record["start"])
                    await caller.wait_bot_quiet(quiet_for=0.5, timeout=30)
                    live_pss.append(pss_mb(record["pid"]) or float("nan"))
                finally:
                    await caller.close()
                print(f"  {'warm' if min_warm else 'cold'} session {index + 1}/{sessions}: "
                      f"ttfw {ttfw[-1]:.0f} ms, assigned in {assign[-1]} ms ({kinds[-1]})",
                      file=sys.stderr, flush=True)
    finally:
        server.stop()
    return {
        "sessions": sessions, "starts": {k: kinds.count(k) for k in set(kinds)},
        "ttfw_ms": {"p50": percentile(ttfw, 0.5), "p95": percentile(ttfw, 0.95)},
        "assignment_ms": {"p50": percentile(assign, 0.5), "p99": percentile(assign, 0.99)},
        "pss_mb": {"live_session_p50": percentile(live_pss, 0.5),
                   "idle_warm_p50": percentile(idle_pss, 0.5) if idle_pss else None},
    }


async def burst(capacity_bots: int = 2, factor: int = 10) -> dict[str, Any]:
    server = _serve(f"capacity_cpu_millis = {500 * capacity_bots}\nqueue_max = {capacity_bots * 2}\n"
                    f'queue_wait_s = 10.0\n[[agents]]\nname = "tone"\nbot = "{TONE_BOT}"\n'
                    'min_warm = 0\npool_policy = "fixed"\n')
    try:
        url = await server.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=server.headers,  # unbounded per client
                                     limits=httpx.Limits(max_connections=factor * capacity_bots)) as http:
            async def one() -> tuple[str, float]:
                started = time.monotonic()
                try:
                    reply = await http.post("/start", json={"transport": "webrtc"})
                except httpx.HTTPError as exc:
                    return f"unanswered ({type(exc).__name__})", time.monotonic() - started
                elapsed = time.monotonic() - started
                if reply.status_code == 429:
                    return "rejected_429", elapsed
                if reply.status_code == 200:
                    return "queued" if reply.json().get("queued") else "started", elapsed
                return f"http_{reply.status_code}", elapsed

            results = await asyncio.gather(*(one() for _ in range(factor * capacity_bots)))
            capacity = (await http.get("/v1/capacity")).json()
    finally:
        server.stop()
    outcomes = [r[0] for r in results]
    times = [r[1] * 1000 for r in results]
    return {"requests": len(results), "capacity_bots": capacity_bots,
            "outcomes": {k: outcomes.count(k) for k in sorted(set(outcomes))},
            "answer_ms": {"p50": percentile(times, 0.5), "p99": percentile(times, 0.99), "max": max(times)},
            "unanswered": sum(1 for o in outcomes if o.startswith("unanswered")),
            "invariant_ok_after": capacity["invariant_ok"]}


async def run_start_bench(sessions: int) -> dict[str, Any]:
    advertise_addresses(["127.0.0.1"])
    report = {"warm": await start_series(sessions, min_warm=1), "cold": await start_series(sessions, min_warm=0),
              "burst": await burst()}
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"{'start':<6}{'TTFW p50':>10}{'TTFW p95':>10}{'assign p50':>12}{'assign p99':>12}"
             f"{'live PSS':>10}{'idle PSS':>10}"]
    for kind in ("warm", "cold"):
        r = report[kind]
        idle = r["pss_mb"]["idle_warm_p50"]
        lines.append(f"{kind:<6}{r['ttfw_ms']['p50']:>8.0f}ms{r['ttfw_ms']['p95']:>8.0f}ms"
                     f"{r['assignment_ms']['p50']:>10.1f}ms{r['assignment_ms']['p99']:>10.1f}ms"
                     f"{r['pss_mb']['live_session_p50']:>8.0f}MB{(f'{idle:.0f}MB' if idle else '-'):>10}")
    b = report["burst"]
    lines.append(f"burst: {b['requests']} simultaneous starts at capacity {b['capacity_bots']}: {b['outcomes']}, "
                 f"answer p50 {b['answer_ms']['p50']:.0f} ms p99 {b['answer_ms']['p99']:.0f} ms, "
                 f"unanswered {b['unanswered']}, invariant ok {b['invariant_ok_after']}")
    return "\n".join(lines)
