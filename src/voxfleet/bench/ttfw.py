"""``voxfleet bench ttfw``: time to first word and voice-to-voice, voxfleet vs Pipecat's dev runner.

Both servers run the same bot file against the same local LLM process, one after the other on
this machine, each driven by the same aiortc caller for N sequential sessions:

- time to first word: ``POST /start`` sent -> first non-silent bot audio frame at the caller;
- voice-to-voice: the caller's last speech frame -> first bot audio after it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voxfleet.bench.speech import speak
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots.assistant_prompts import warm_up_messages
from voxfleet.bots.llm_server import LocalLLMServer, free_port
from voxfleet.config import LLMSettings
from voxfleet.observability.turns import percentile as turn_percentile
from voxfleet.transports.ice import advertise_addresses


def percentile(values: list[float], q: float) -> float:
    """observability.turns.percentile, NaN for no values (the benches' tables print it)."""
    value = turn_percentile(values, q)
    return float("nan") if value is None else value


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def pool_settled(http: Any, agent: str, min_warm: int, timeout: float = 60) -> dict[str, Any]:
    """Between a benchmark's calls: the last call's bot is gone and `min_warm` bots are warm, none
    warming. Returns the agent's pool status (``warm_pids``, ...)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = (await http.get("/v1/capacity")).json()["agents"][agent]
        if not pool["active"] and pool["warm"] >= min_warm and not pool["warming"]:
            return pool
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the {agent} pool did not settle within {timeout:.0f}s")


class Served:
    """A server process that prints a line matching `ready` when it can take calls."""

    def __init__(self, argv: list[str], env: dict[str, str], ready: str, url_from: str | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="voxfleet-bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                     text=True)
        self.ready = re.compile(ready)
        self.url = url_from

    async def wait_ready(self, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            match = self.ready.search(text)
            if match:
                return self.url or match.group(1).rstrip("/")
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; log: {self.log.name}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f}s; log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def busy_cpu_s() -> float:
    """CPU seconds this machine spent on anything but idle and I/O wait, since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def dev_runner(bot_ref: str, env: dict[str, str]) -> Served:
    """Pipecat's own dev runner serving `bot_ref` over WebRTC on a free loopback port."""
    port = free_port()
    return Served([sys.executable, "-m", "voxfleet.testing.devrunner", bot_ref, "-t", "webrtc",
                   "--host", "127.0.0.1", "--port", str(port)], env,
                  ready=r"(Uvicorn running on http://\S+)", url_from=f"http://127.0.0.1:{port}")


async def served_peer_url(peer: Served) -> str:
    url = await peer.wait_ready()
    await asyncio.sleep(1.0)  # the runner logs "running" just before it accepts
    return url


async def one_session(url: str, question) -> dict[str, Any]:
    """One call: the greeting, the spoken question, the answer. TTFW and voice-to-voice at the
    caller, and the CPU the machine spent on the turn (question sent -> answer over), less the
    caller's own."""
    caller = WebRTCCaller(url)
    try:
        await caller.connect()
        ttfw_ms = await caller.wait_first_audio(timeout=60)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=60)
        cpu0, own0 = busy_cpu_s(), time.process_time()
        spoken_at = await caller.say(question)
        v2v_s = await caller.wait_bot_audio_after(spoken_at, timeout=60)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=60)
        cpu_s = (busy_cpu_s() - cpu0) - (time.process_time() - own0)
        return {"ttfw_ms": ttfw_ms, "v2v_ms": v2v_s * 1000, "cpu_s": round(cpu_s, 3),
                "session_id": caller.result.session_id}
    finally:
        await caller.close()


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


async def shared_llm() -> tuple[LocalLLMServer, dict[str, str], dict[str, str]]:
    """One LLM process for both servers of a comparison: (server, env for a Pipecat runner's bot,
    env for voxfleet serve)."""
    llm = LocalLLMServer(model="gemma3-270m", alias="gemma3-270m", port=0, threads=LLMSettings().local_threads, ctx=2048,
                         cache_dir=Path.home() / ".cache" / "voxfleet" / "models",
                         warm_up_messages=warm_up_messages())
    await llm.start()
    bot_env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "not-needed", "OPENAI_MODEL": llm.alias}
    serve_env = {"VOXFLEET_LLM__BASE_URL": llm.base_url, "VOXFLEET_LLM__MODEL": llm.alias}
    return llm, bot_env, serve_env


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


def latency_table(report: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Header and one row per series of `report` present: TTFW and V2V p50/p95, failures."""
    lines = [f"{'server':<22}{'TTFW p50':>10}{'TTFW p95':>10}{'V2V p50':>10}{'V2V p95':>10}{'failed':>8}"]
    for key in keys:
        if key in report:
            r = report[key]
            lines.append(f"{key:<22}{r['ttfw_ms']['p50']:>8.0f}ms{r['ttfw_ms']['p95']:>8.0f}ms"
                         f"{r['v2v_ms']['p50']:>8.0f}ms{r['v2v_ms']['p95']:>8.0f}ms{r['failed']:>8}")
    return lines


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
