"""``voxfleet bench ray``: warm and cold starts on Ray vs the local backend, in one command.

It starts a real Ray cluster on this machine (``testing.ray_cluster``: a head on 127.0.0.2 and
bot nodes on 127.0.0.3 (eu) and 127.0.0.4 (us), token auth on), then for each backend a
``voxfleet serve`` of the model-free ``tone`` bot, once keeping one warm bot (``min_warm = 1``
per region on Ray) and once keeping none, and runs N sequential WebRTC calls with the aiortc
caller against each. Per call: time to first word at the caller (``/start`` sent -> first
non-silent bot audio), assignment latency (the session's ``botStartMs``: start request -> a
bot owns the session) and the bot's PSS. Per Ray node: the PSS of every process the node runs
(raylet, agents, bot actors) with the bots idle-warm. Ratios are Ray / local.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bench.harness import Served, percentile, pool_settled
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.extras import require_extra
from voxfleet.runtime.local.node import pss_mb
from voxfleet.testing.ray_cluster import BotNode, LocalRayCluster, _descendants
from voxfleet.transports.ice import advertise_addresses

TONE_BOT = Path(tone.__file__)
NODES = [BotNode("127.0.0.3", "eu", 2.0, 8192), BotNode("127.0.0.4", "us", 2.0, 8192)]


def _serve(min_warm: int, cluster: LocalRayCluster | None) -> Served:
    path = Path(tempfile.mkdtemp(prefix="voxfleet-bench-")) / "voxfleet.toml"
    backend = f'backend = "ray"\n[ray]\naddress = "{cluster.address}"\ndefault_region = "eu"\n' if cluster else ""
    path.write_text(f'capacity_cpu_millis = 2000\n{backend}[[agents]]\nname = "tone"\nbot = "{TONE_BOT}"\n'
                    f'min_warm = {min_warm}\npool_policy = "fixed"\n')
    env = {"VOXFLEET_CONFIG": str(path), **(cluster.env() if cluster else {})}
    return Served([sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0", "--advertise", "127.0.0.1",
                   "--log-level", "WARNING", "--dev"], env, ready=r"voxfleet: ready, open (http://\S+)")


async def series(sessions: int, min_warm: int, cluster: LocalRayCluster | None) -> dict[str, Any]:
    label = f"{'ray' if cluster else 'local'} {'warm' if min_warm else 'cold'}"
    server = _serve(min_warm, cluster)
    ttfw, assign, live_pss, idle_pss, kinds, nodes = [], [], [], [], [], []
    node_pss: dict[str, float] = {}
    try:
        url = await server.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for index in range(sessions):
                if min_warm:
                    pids = (await pool_settled(http, "tone", 1))["warm_pids"]
                    idle_pss.append(pss_mb(pids[0]) or float("nan"))
                    if cluster and index == 0:
                        node_pss = {address: _tree_pss(node) for address, node in cluster.nodes.items()}
                else:
                    await asyncio.sleep(1.0)
                caller = WebRTCCaller(url)
                try:
                    result = await caller.connect()
                    ttfw.append(await caller.wait_first_audio(timeout=60))
                    record = (await http.get(f"/v1/sessions/{result.session_id}")).json()
                    assign.append(record["botStartMs"])
                    kinds.append(record["start"])
                    nodes.append(record.get("node"))
                    live_pss.append(pss_mb(record["pid"]) or float("nan"))
                finally:
                    await caller.close()
                print(f"  {label} session {index + 1}/{sessions}: ttfw {ttfw[-1]:.0f} ms, assigned in "
                      f"{assign[-1]} ms ({kinds[-1]}, node {nodes[-1]})", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return {
        "sessions": sessions, "starts": {k: kinds.count(k) for k in set(kinds)},
        "nodes": {n: nodes.count(n) for n in set(nodes)},
        "ttfw_ms": {"p50": percentile(ttfw, 0.5), "p95": percentile(ttfw, 0.95)},
        "assignment_ms": {"p50": percentile(assign, 0.5), "p95": percentile(assign, 0.95),
                          "p99": percentile(assign, 0.99)},
        "bot_pss_mb": {"live_p50": percentile(live_pss, 0.5),
                       "idle_warm_p50": percentile(idle_pss, 0.5) if idle_pss else None},
        "node_pss_mb": node_pss or None,
    }


def _tree_pss(node: Any) -> float:
    pids = _descendants([p.process.pid for procs in node.all_processes.values() for p in procs])
    return round(sum(pss_mb(pid) or 0.0 for pid in pids), 1)


async def run_ray_bench(sessions: int) -> dict[str, Any]:
    require_extra("ray", "voxfleet bench ray")  # before the local series, not minutes into the run
    advertise_addresses(["127.0.0.1"])
    report: dict[str, Any] = {"local": {"warm": await series(sessions, 1, None),
                                        "cold": await series(sessions, 0, None)}}
    cluster = LocalRayCluster(NODES).start()
    try:
        report["cluster_start_s"] = round(cluster.started_s, 2)
        report["ray"] = {"warm": await series(sessions, 1, cluster), "cold": await series(sessions, 0, cluster)}
    finally:
        cluster.shutdown()
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"{'backend':<8}{'start':<6}{'TTFW p50':>10}{'TTFW p95':>10}{'assign p50':>12}{'assign p95':>12}"
             f"{'live PSS':>10}{'idle PSS':>10}"]
    for backend in ("local", "ray"):
        for kind in ("warm", "cold"):
            r = report[backend][kind]
            idle = r["bot_pss_mb"]["idle_warm_p50"]
            lines.append(f"{backend:<8}{kind:<6}{r['ttfw_ms']['p50']:>8.0f}ms{r['ttfw_ms']['p95']:>8.0f}ms"
                         f"{r['assignment_ms']['p50']:>10.1f}ms{r['assignment_ms']['p95']:>10.1f}ms"
                         f"{r['bot_pss_mb']['live_p50']:>8.0f}MB{(f'{idle:.0f}MB' if idle else '-'):>10}")
    for kind in ("warm", "cold"):
        ray, local = report["ray"][kind]["ttfw_ms"], report["local"][kind]["ttfw_ms"]
        lines.append(f"{kind} TTFW ray/local: p50 x{ray['p50'] / local['p50']:.2f}, p95 x{ray['p95'] / local['p95']:.2f}")
    nodes = report["ray"]["warm"]["node_pss_mb"] or {}
    lines.append("Ray node PSS (raylet, agents, one idle warm bot per region): "
                 + ", ".join(f"{address} {mb:.0f} MB" for address, mb in nodes.items())
                 + f"; cluster start {report['cluster_start_s']} s")
    return "\n".join(lines)
