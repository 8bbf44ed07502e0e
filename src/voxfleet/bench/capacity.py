"""``voxfleet bench capacity``: how many concurrent assistant calls this node serves well.

The same aiortc caller as ``bench turn`` calls the built-in assistant k at a time (each asks its
question right after its greeting, so the k turns overlap), for k = 1, 2, ... up to what the
node's CPU could admit at the smallest profile. A level is served well when no call failed and
its caller-side voice-to-voice p95 is within ``goal`` (1.3x) of one call's p95. Printed per
level: caller V2V p50/p95, the ratio, the bot's own p95, CPU seconds per turn; then the most
calls served well and the smallest profile with which admission lets in no more (to set as
``profile`` in the agent's ``[[agents]]`` entry).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from voxfleet.bench.harness import pool_settled, shared_llm
from voxfleet.bench.speech import speak
from voxfleet.bench.turn import _ms, _serve, run_calls
from voxfleet.config import BUILTIN_ASSISTANT
from voxfleet.runtime.local.node import cpu_millis
from voxfleet.scheduler.capacity import PROFILES
from voxfleet.transports.ice import advertise_addresses

GOAL = 1.3


def served_well(levels: dict[int, dict[str, Any]], goal: float = GOAL) -> int:
    """The most concurrent calls whose caller V2V p95 is within `goal` of one call's, with no
    failure, counting up from 1 (a level past the first that fails ends the count)."""
    one = levels.get(1, {}).get("v2v_ms", {}).get("p95")
    if not one or levels[1].get("failed"):
        return 0
    served = 1
    for k in sorted(levels):
        if k <= 1:
            continue
        p95 = levels[k]["v2v_ms"].get("p95")
        if levels[k].get("failed") or p95 is None or p95 > goal * one:
            break
        served = k
    return served


def profile_for(node_millis: int, calls: int) -> tuple[str | None, int]:
    """(the smallest profile with which admission lets at most `calls` calls in on `node_millis`,
    how many it lets in), or (None, 0) if even the largest lets in more."""
    for profile in sorted(PROFILES.values(), key=lambda p: p.resources.cpu_millis):
        admitted = node_millis // profile.resources.cpu_millis
        if 1 <= admitted <= calls:
            return profile.name, admitted
    return None, 0


async def run_capacity_bench(calls: int, max_concurrency: int | None, speech_text: str) -> dict[str, Any]:
    advertise_addresses(["127.0.0.1"])
    question = speak(speech_text)
    node = cpu_millis()
    smallest = min(p.resources.cpu_millis for p in PROFILES.values())
    top = max_concurrency or max(2, node // smallest)
    llm, _, serve_env = await shared_llm()
    # Admission must let every level in (the node is declared large enough for `top` calls), and
    # the pool keeps a warm bot for every call of a level (a cold start's model loading would
    # land on the other calls' turns; a node sized for its traffic serves from its warm pool).
    agents = json.dumps([{"name": "assistant", "bot": BUILTIN_ASSISTANT, "min_warm": top, "pool_policy": "fixed"}])
    env = {**serve_env, "VOXFLEET_CAPACITY_CPU_MILLIS": str(top * 1500), "VOXFLEET_QUEUE_MAX": "0",
           "VOXFLEET_AGENTS": agents}
    levels: dict[int, dict[str, Any]] = {}
    try:
        server = _serve(None, env)
        try:
            url = await server.wait_ready()
            for k in range(1, top + 1):
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    await pool_settled(http, "assistant", min_warm=top, timeout=180)
                levels[k] = await run_calls(f"capacity x{k}", url, max(calls, k) // k * k, question,
                                            records=True, agent="assistant", concurrency=k)
                if served_well(levels) < k:
                    break  # past what the node serves well: higher levels only get worse
        finally:
            server.stop()
    finally:
        await llm.aclose()
    served = served_well(levels)
    profile, admitted = profile_for(node, served)
    report = {"node_cpu_millis": node, "goal_ratio": GOAL, "calls_per_level": calls, "levels": levels,
              "served_well": served, "profile": profile, "admitted_with_profile": admitted}
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    levels = report["levels"]
    one = levels.get(1, {}).get("v2v_ms", {}).get("p95")
    lines = [f"concurrent assistant calls on this node ({report['node_cpu_millis']} millicores), "
             f"{report['calls_per_level']} calls per level",
             f"{'calls':>5}{'V2V p50':>9}{'p95':>6}{'x one':>7}{'bot p95':>9}{'CPU s/turn':>11}{'failed':>7}"]
    for k, r in sorted(levels.items()):
        p95 = r["v2v_ms"]["p95"]
        ratio = f"{p95 / one:.2f}" if p95 and one else "-"
        lines.append(f"{k:>5}{_ms(r['v2v_ms']['p50']):>9}{_ms(p95):>6}{ratio:>7}"
                     f"{_ms((r.get('bot_v2v_ms') or {}).get('p95')):>9}"
                     f"{r['cpu_s_per_turn']['p50'] or float('nan'):>11.2f}{r['failed']:>7}")
    served = report["served_well"]
    lines.append(f"served well (caller V2V p95 <= {report['goal_ratio']}x one call's, no failure): {served} "
                 f"concurrent call(s)")
    if report["profile"]:
        lines.append(f"give the agent profile = \"{report['profile']}\": admission then lets in "
                     f"{report['admitted_with_profile']} call(s) on this node")
    else:
        lines.append("no profile reserves enough CPU to hold this node to that many calls")
    return "\n".join(lines)
