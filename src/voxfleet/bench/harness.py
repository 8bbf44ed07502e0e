"""What every benchmark shares: a server process to wait for and stop, one aiortc call with its
time to first word and voice-to-voice, one LLM process for both sides of a comparison, the
percentiles and tables the reports print, and a few readings from /proc."""

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

from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots.assistant_prompts import warm_up_messages
from voxfleet.bots.llm_server import LocalLLMServer, free_port
from voxfleet.config import LLMSettings, llm_threads
from voxfleet.observability.turns import percentile as turn_percentile


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


# what `voxfleet serve` prints at its first start (control/server.py): the admin key, shown once
ADMIN_KEY = re.compile(r"voxfleet: created the admin API key \(.*\): (\S+)")


class Served:
    """A server process that prints a line matching `ready` when it can take calls; for a
    `voxfleet serve`, ``headers`` carry the admin key it printed (none under --dev)."""

    def __init__(self, argv: list[str], env: dict[str, str], ready: str, url_from: str | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="voxfleet-bench-", suffix=".log", delete=False)
        # a store of its own: a benchmark neither reads nor writes the operator's sessions and keys
        store = f"sqlite:///{tempfile.mkdtemp(prefix='voxfleet-bench-')}/voxfleet.db"
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "VOXFLEET_DATABASE_URL": store, **env}, text=True)
        self.ready = re.compile(ready)
        self.url = url_from
        self.headers: dict[str, str] = {}

    async def wait_ready(self, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            match = self.ready.search(text)
            if match:
                key = ADMIN_KEY.search(text)
                self.headers = {"Authorization": f"Bearer {key.group(1)}"} if key else {}
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


async def one_session(url: str, question, agent: str | None = None) -> dict[str, Any]:
    """One call (of `agent`, else the default one): the greeting, the spoken question, the answer.
    TTFW and voice-to-voice at the caller, and the CPU the machine spent on the turn (question
    sent -> answer over), less the caller's own."""
    caller = WebRTCCaller(url, agent=agent)
    try:
        await caller.connect()
        ttfw_ms = await caller.wait_first_audio(timeout=60)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=60)
        cpu0, own0 = busy_cpu_s(), time.process_time()
        spoken_at = await caller.say(question)
        v2v_s = await caller.wait_bot_audio_after(spoken_at, timeout=60)
        await caller.wait_bot_quiet(quiet_for=0.8, timeout=60)
        cpu_s = (busy_cpu_s() - cpu0) - (time.process_time() - own0)
        to_epoch = time.time() - time.monotonic()  # the bot stamps its turns in epoch seconds
        return {"ttfw_ms": ttfw_ms, "v2v_ms": v2v_s * 1000, "cpu_s": round(cpu_s, 3),
                "session_id": caller.result.session_id, "speech_end_at": spoken_at + to_epoch,
                "heard_at": spoken_at + v2v_s + to_epoch}
    finally:
        await caller.close()


async def shared_llm() -> tuple[LocalLLMServer, dict[str, str], dict[str, str]]:
    """One LLM process for both servers of a comparison: (server, env for a Pipecat runner's bot,
    env for voxfleet serve)."""
    llm = LocalLLMServer(model="gemma3-270m", alias="gemma3-270m", port=0,
                         threads=llm_threads(LLMSettings().local_threads), ctx=2048,
                         cache_dir=Path.home() / ".cache" / "voxfleet" / "models",
                         warm_up_messages=warm_up_messages())
    await llm.start()
    bot_env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "not-needed", "OPENAI_MODEL": llm.alias}
    serve_env = {"VOXFLEET_LLM__BASE_URL": llm.base_url, "VOXFLEET_LLM__MODEL": llm.alias}
    return llm, bot_env, serve_env


def latency_table(report: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Header and one row per series of `report` present: TTFW and V2V p50/p95, failures."""
    lines = [f"{'server':<22}{'TTFW p50':>10}{'TTFW p95':>10}{'V2V p50':>10}{'V2V p95':>10}{'failed':>8}"]
    for key in keys:
        if key in report:
            r = report[key]
            lines.append(f"{key:<22}{r['ttfw_ms']['p50']:>8.0f}ms{r['ttfw_ms']['p95']:>8.0f}ms"
                         f"{r['v2v_ms']['p50']:>8.0f}ms{r['v2v_ms']['p95']:>8.0f}ms{r['failed']:>8}")
    return lines
