"""``voxfleet bench ttfw``: time to first word and voice-to-voice, voxfleet vs Pipecat's dev runner.

Both servers run the same bot file against the same local LLM process, one after the other on
this machine, each driven by the same aiortc caller for N sequential sessions:

- time to first word: ``POST /start`` sent -> first non-silent bot audio frame at the caller;
- voice-to-voice: the caller's last speech frame -> first bot audio after it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from voxfleet.bench.harness import (Served, dev_runner, latency_table, one_session, percentile, rss_mb,
                                    served_peer_url, shared_llm)
from voxfleet.bench.speech import speak
from voxfleet.transports.ice import advertise_addresses


async def run_series(name: str, url: str, sessions: int, question, watch_pid: int | None) -> dict[str, Any]:
    rows = []
    rss = []
    for index in range(sessions):
        try:
            rows.append(await one_session(url, question))
        except Exception as exc:  # noqa: BLE001 - a failed session is counted, not fatal
            rows.append({"error": f"{type(exc).__name__}: {exc}"})
        await asyncio.sleep(1.0)  # let the session end before the next one
        if watch_pid:
            rss.append(rss_mb(watch_pid))
        print(f"  {name} session {index + 1}/{sessions}: {rows[-1]}", file=sys.stderr, flush=True)
    ok = [r for r in rows if "error" not in r]
    ttfw = [r["ttfw_ms"] for r in ok]
    v2v = [r["v2v_ms"] for r in ok]
    return {
        "sessions": sessions, "failed": sessions - len(ok),
        "ttfw_ms": {"p50": percentile(ttfw, 0.5), "p95": percentile(ttfw, 0.95), "all": ttfw},
        "v2v_ms": {"p50": percentile(v2v, 0.5), "p95": percentile(v2v, 0.95), "all": v2v},
        "server_rss_mb": rss,
        "errors": [r["error"] for r in rows if "error" in r],
    }


async def run_ttfw_bench(sessions: int, bot: str | None, include_peer: bool, speech_text: str) -> dict[str, Any]:
    advertise_addresses(["127.0.0.1"])
    question = speak(speech_text)
    bot_ref = bot or "voxfleet.bots.assistant"
    llm, llm_env, serve_env = await shared_llm()
    report: dict[str, Any] = {"bot": bot_ref, "sessions": sessions, "question": speech_text}
    try:
        serve_args = [sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0", "--advertise", "127.0.0.1",
                      "--log-level", "WARNING"]
        if bot:
            serve_args += ["--bot", bot]
        voxfleet = Served(serve_args, {**serve_env, "VOXFLEET_CONFIG": "/nonexistent.toml"},
                          ready=r"voxfleet: ready, open (http://\S+)")
        try:
            url = await voxfleet.wait_ready()
            report["voxfleet"] = await run_series("voxfleet", url, sessions, question, None)
        finally:
            voxfleet.stop()

        if include_peer:
            peer = dev_runner(bot_ref, llm_env)
            try:
                url = await served_peer_url(peer)
                report["pipecat_dev_runner"] = await run_series("pipecat-runner", url, sessions, question,
                                                                peer.proc.pid)
            finally:
                peer.stop()
    finally:
        await llm.aclose()
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"time to first word / voice-to-voice, {report['sessions']} sequential sessions, bot {report['bot']}",
             *latency_table(report, ("voxfleet", "pipecat_dev_runner"))]
    if "voxfleet" in report and "pipecat_dev_runner" in report:
        ours, theirs = report["voxfleet"], report["pipecat_dev_runner"]
        ratio = theirs["ttfw_ms"]["p50"] / ours["ttfw_ms"]["p50"] if ours["ttfw_ms"]["p50"] else float("nan")
        ratio95 = theirs["ttfw_ms"]["p95"] / ours["ttfw_ms"]["p95"] if ours["ttfw_ms"]["p95"] else float("nan")
        v2v = theirs["v2v_ms"]["p50"] / ours["v2v_ms"]["p50"] if ours["v2v_ms"]["p50"] else float("nan")
        lines.append(f"ratio (dev runner / voxfleet): TTFW p50 {ratio:.2f}x, TTFW p95 {ratio95:.2f}x, V2V p50 {v2v:.2f}x")
        rss = theirs.get("server_rss_mb") or []
        if rss:
            lines.append(f"dev runner process RSS after sessions 1..{len(rss)}: {rss[0]:.0f} MB -> {rss[-1]:.0f} MB")
    return "\n".join(lines)
