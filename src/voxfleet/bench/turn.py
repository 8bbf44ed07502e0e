"""``voxfleet bench turn``: voice-to-voice per turn, at the caller and as the platform records it.

In one command, on one machine, with one shared LLM process, N sequential calls (greeting, a
spoken question, the answer) by the same aiortc caller against:

- ``voxfleet``: ``voxfleet serve`` with its built-in assistant;
- ``voxfleet_plain_bot``: ``voxfleet serve --bot`` with a plain Pipecat bot (``testing/plain_bot.py``:
  models built in ``bot()``, no voxfleet hooks; ``--bot`` picks another file);
- ``pipecat_dev_runner``: Pipecat's own dev runner serving that same plain bot (its turns timed by
  the same observer voxfleet's bots use, ``testing/devrunner.py``, so the stages compare).

Printed: caller-side TTFW and voice-to-voice p50/p95 (the caller's last voiced frame -> the first
bot audio it hears), the ratios to the dev runner, voxfleet's own per-turn figure from the session
record (end of speech as the bot received it -> first audio frame written) with each stage's
p50/p95, the gap between the two figures, and CPU seconds per turn. With ``--concurrency 1,2,4``
the assistant is also called k at a time (each asks right after its greeting), per k.

With ``--record`` the assistant series is two series of one server instead, its calls alternating
between two agents of the built-in assistant that differ only in ``record`` (off, on): what a
recording costs a turn, printed as the on/off ratio of voice-to-voice p50 and p95.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bench.harness import (Served, dev_runner, one_session, percentile, pool_settled, served_peer_url,
                                    shared_llm)
from voxfleet.bench.speech import speak
from voxfleet.observability.turns import STAGES
from voxfleet.runtime.local.node import pss_mb
from voxfleet.transports.ice import advertise_addresses

PLAIN_BOT = Path(importlib.util.find_spec("voxfleet.testing.plain_bot").origin)  # found, not imported


def _p(values: list[float]) -> dict[str, Any]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}


async def _bot_side(http: httpx.AsyncClient, session_id: str) -> dict[str, Any] | None:
    """The session record's first turn once the session has ended (the record is final then)."""
    for _ in range(100):
        record = (await http.get(f"/v1/sessions/{session_id}")).json()
        if record.get("state") == "ended":
            turns = record["latency"].get("turns") or []
            return turns[0] if turns else None
        await asyncio.sleep(0.1)
    return None


def _next_turn(turns_file: Path, seen: int) -> tuple[dict[str, Any] | None, int]:
    """The first turn a dev-runner bot appended to `turns_file` after the `seen` it had before."""
    lines = turns_file.read_text().splitlines() if turns_file.exists() else []
    return (json.loads(lines[seen]) if len(lines) > seen else None), len(lines)


async def run_calls(name: str, url: str, calls: int, question, *, records: bool, agent: str | None,
                    concurrency: int = 1, turns_file: Path | None = None) -> dict[str, Any]:
    """`calls` calls, `concurrency` at a time; per call the caller's figures and (records=True)
    the platform's own record of the turn, or (turns_file, sequential calls) the turn the
    dev-runner bot timed with the same observer."""
    seen = 0
    rows: list[dict[str, Any]] = []
    idle_pss: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        done = 0
        while done < calls:
            batch = min(concurrency, calls - done)
            results = await asyncio.gather(*(one_session(url, question) for _ in range(batch)),
                                           return_exceptions=True)
            for result in results:
                done += 1
                if isinstance(result, BaseException):
                    rows.append({"error": f"{type(result).__name__}: {result}"})
                else:
                    if records:
                        result["bot_turn"] = await _bot_side(http, result["session_id"])
                    elif turns_file is not None:
                        await asyncio.sleep(0.3)  # the bot writes its turn as its answer starts
                        result["bot_turn"], seen = _next_turn(turns_file, seen)
                    rows.append(result)
                print(f"  {name} call {done}/{calls}: {rows[-1]}", file=sys.stderr, flush=True)
            if agent is not None:
                pool = await pool_settled(http, agent, min_warm=1)
                idle_pss += [mb for pid in pool.get("warm_pids") or [] if (mb := pss_mb(pid))]
            else:
                await asyncio.sleep(1.5)
    return _summary(rows, calls, concurrency, idle_pss)


def _summary(rows: list[dict[str, Any]], calls: int, concurrency: int, idle_pss: list[float]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    report: dict[str, Any] = {
        "calls": calls, "concurrency": concurrency, "failed": calls - len(ok),
        "ttfw_ms": _p([r["ttfw_ms"] for r in ok]), "v2v_ms": _p([r["v2v_ms"] for r in ok]),
        "cpu_s_per_turn": _p([r["cpu_s"] for r in ok]),
        "idle_warm_bot_pss_mb": _p(idle_pss),
        "errors": [r["error"] for r in rows if "error" in r],
    }
    bot_turns = [(r, r["bot_turn"]) for r in ok if r.get("bot_turn")]
    if bot_turns:
        report["bot_v2v_ms"] = _p([t["v2vMs"] for _, t in bot_turns])
        report["caller_minus_bot_ms"] = _p([r["v2v_ms"] - t["v2vMs"] for r, t in bot_turns])
        # The gap split by direction (same machine, one clock): the caller's end of speech -> the
        # end of speech as the bot's VAD placed it, and the bot's first audio out -> heard.
        report["uplink_ms"] = _p([(t["speechEndAt"] - r["speech_end_at"]) * 1000 for r, t in bot_turns])
        report["downlink_ms"] = _p([(r["heard_at"] - t["speechEndAt"]) * 1000 - t["v2vMs"] for r, t in bot_turns])
        report["stages_ms"] = {s: _p([t["stagesMs"][s] for _, t in bot_turns if s in t["stagesMs"]])
                               for s in STAGES}
    return report


def _serve(bot: Path | None, env: dict[str, str]) -> Served:
    argv = [sys.executable, "-m", "voxfleet.cli", "serve", "--dev", "--port", "0", "--advertise", "127.0.0.1",
            "--log-level", "WARNING"]
    if bot is not None:
        argv += ["--bot", str(bot)]
    return Served(argv, {**env, "VOXFLEET_CONFIG": "/nonexistent.toml"}, ready=r"voxfleet: ready, open (http://\S+)")


async def run_turn_bench(calls: int, bot: str | None, speech_text: str, concurrency: list[int],
                         include_plain: bool = True, include_peer: bool = True,
                         include_assistant: bool = True, record: bool = False) -> dict[str, Any]:
    advertise_addresses(["127.0.0.1"])
    question = speak(speech_text)
    plain = Path(bot) if bot else PLAIN_BOT
    llm, bot_env, serve_env = await shared_llm()
    report: dict[str, Any] = {"calls": calls, "question": speech_text, "plain_bot": str(plain), "series": {}}
    try:
        if include_assistant and record:
            await _recording_series(report, calls, question, serve_env)
        elif include_assistant:
            await _assistant_series(report, calls, question, concurrency, serve_env)
        if include_plain:
            agent = plain.stem.replace("_", "-").lower()  # the agent name `serve --bot` gives it
            server = _serve(plain, serve_env)
            try:
                url = await server.wait_ready()
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    await pool_settled(http, agent, min_warm=1, timeout=120)
                report["series"]["voxfleet_plain_bot"] = await run_calls(
                    "voxfleet --bot plain", url, calls, question, records=True, agent=agent)
            finally:
                server.stop()
        if include_peer:
            with tempfile.TemporaryDirectory() as tmp:
                turns = Path(tmp) / "turns.jsonl"
                peer = dev_runner(str(plain), {**bot_env, "VOXFLEET_TURNS_FILE": str(turns)})
                try:
                    url = await served_peer_url(peer)
                    report["series"]["pipecat_dev_runner"] = await run_calls(
                        "pipecat dev runner (plain bot)", url, calls, question, records=False, agent=None,
                        turns_file=turns)
                finally:
                    peer.stop()
    finally:
        await llm.aclose()
    report["text"] = render(report)
    return report


async def _assistant_series(report: dict[str, Any], calls: int, question: Any, concurrency: list[int],
                            serve_env: dict[str, str]) -> None:
    server = _serve(None, serve_env)
    try:
        url = await server.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await pool_settled(http, "assistant", min_warm=1, timeout=120)
        report["series"]["voxfleet"] = await run_calls("voxfleet", url, calls, question, records=True,
                                                       agent="assistant")
        for k in concurrency:
            if k > 1:
                report["series"][f"voxfleet_x{k}"] = await run_calls(
                    f"voxfleet x{k}", url, max(calls, 2 * k) // k * k, question, records=True,
                    agent="assistant", concurrency=k)
    finally:
        server.stop()


RECORDING_AGENTS = {"off": "assistant", "on": "assistant-rec"}


async def _recording_series(report: dict[str, Any], calls: int, question: Any, serve_env: dict[str, str]) -> None:
    """`calls` calls with recording off and `calls` with it on, alternating, on one server (so both
    see the same machine, LLM and moment); each agent keeps a warm bot (agent-1x, so both fit)."""
    from voxfleet.config import BUILTIN_ASSISTANT

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "voxfleet.toml"
        config.write_text("".join(
            f'[[agents]]\nname = "{name}"\nbot = "{BUILTIN_ASSISTANT}"\nprofile = "agent-1x"\nmin_warm = 1\n'
            f'pool_policy = "fixed"\nrecord = {"true" if which == "on" else "false"}\n'
            for which, name in RECORDING_AGENTS.items()) + f'[recordings]\ndir = "{tmp}/recordings"\n')
        argv = [sys.executable, "-m", "voxfleet.cli", "serve", "--dev", "--port", "0", "--advertise", "127.0.0.1",
                "--log-level", "WARNING"]
        server = Served(argv, {**serve_env, "VOXFLEET_CONFIG": str(config)}, ready=r"voxfleet: ready, open (http://\S+)")
        rows: dict[str, list[dict[str, Any]]] = {which: [] for which in RECORDING_AGENTS}
        try:
            url = await server.wait_ready()
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                for agent in RECORDING_AGENTS.values():
                    await pool_settled(http, agent, min_warm=1, timeout=180)
                for i in range(2 * calls):
                    which = ("off", "on")[i % 2]
                    agent = RECORDING_AGENTS[which]
                    try:
                        result = await one_session(url, question, agent=agent)
                        result["bot_turn"] = await _bot_side(http, result["session_id"])
                    except Exception as exc:  # noqa: BLE001 - a failed call is counted, the bench goes on
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                    rows[which].append(result)
                    print(f"  recording {which} call {len(rows[which])}/{calls}: {result}", file=sys.stderr, flush=True)
                    await pool_settled(http, agent, min_warm=1)
        finally:
            server.stop()
    for which, series in rows.items():
        report["series"][f"voxfleet_record_{which}"] = _summary(series, calls, 1, [])


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.0f}"


def render(report: dict[str, Any]) -> str:
    series = report["series"]
    lines = [f"voice-to-voice per turn, {report['calls']} calls per series, question {report['question']!r}",
             f"plain bot: {report['plain_bot']}",
             f"{'series':<26}{'TTFW p50':>9}{'p95':>6}{'V2V p50':>9}{'p95':>6}{'bot V2V p50':>12}{'p95':>6}"
             f"{'gap p50':>8}{'CPU s/turn':>11}{'failed':>7}"]
    for name, r in series.items():
        bot = r.get("bot_v2v_ms") or {}
        gap = r.get("caller_minus_bot_ms") or {}
        lines.append(f"{name:<26}{_ms(r['ttfw_ms']['p50']):>9}{_ms(r['ttfw_ms']['p95']):>6}"
                     f"{_ms(r['v2v_ms']['p50']):>9}{_ms(r['v2v_ms']['p95']):>6}"
                     f"{_ms(bot.get('p50')):>12}{_ms(bot.get('p95')):>6}{_ms(gap.get('p50')):>8}"
                     f"{r['cpu_s_per_turn']['p50'] or float('nan'):>11.2f}{r['failed']:>7}")
    peer = series.get("pipecat_dev_runner")
    for name in ("voxfleet", "voxfleet_plain_bot"):
        ours = series.get(name)
        if ours and peer and peer["v2v_ms"]["p50"] and peer["ttfw_ms"]["p50"]:
            lines.append(f"ratio {name} / dev runner: V2V p50 {ours['v2v_ms']['p50'] / peer['v2v_ms']['p50']:.2f}x, "
                         f"p95 {ours['v2v_ms']['p95'] / peer['v2v_ms']['p95']:.2f}x; "
                         f"TTFW p50 {ours['ttfw_ms']['p50'] / peer['ttfw_ms']['p50']:.2f}x")
    off, on = series.get("voxfleet_record_off"), series.get("voxfleet_record_on")
    if off and on and off["v2v_ms"]["p50"] and on["v2v_ms"]["p50"]:
        lines.append(f"recording on / off: V2V p50 {on['v2v_ms']['p50'] / off['v2v_ms']['p50']:.2f}x "
                     f"({_ms(on['v2v_ms']['p50'])} vs {_ms(off['v2v_ms']['p50'])} ms), p95 "
                     f"{on['v2v_ms']['p95'] / off['v2v_ms']['p95']:.2f}x "
                     f"({_ms(on['v2v_ms']['p95'])} vs {_ms(off['v2v_ms']['p95'])} ms)")
    single = series.get("voxfleet")
    for name, r in series.items():
        if name.startswith("voxfleet_x") and single and single["v2v_ms"]["p95"]:
            lines.append(f"{name}: caller V2V p95 {r['v2v_ms']['p95'] / single['v2v_ms']['p95']:.2f}x the one-call p95")
    for name, r in series.items():
        if r["idle_warm_bot_pss_mb"]["n"]:
            lines.append(f"{name}: idle warm bot PSS p50 {r['idle_warm_bot_pss_mb']['p50']:.0f} MB")
    for name, r in series.items():
        if "stages_ms" in r:
            stages = ", ".join(f"{s} {_ms(v['p50'])}/{_ms(v['p95'])}" for s, v in r["stages_ms"].items() if v["n"])
            lines.append(f"{name} stages after end of speech, p50/p95 ms: {stages}")
        if r.get("uplink_ms", {}).get("n"):
            lines.append(f"{name} gap by direction, p50/p95 ms: caller -> bot's end of speech "
                         f"{_ms(r['uplink_ms']['p50'])}/{_ms(r['uplink_ms']['p95'])}, bot's first audio out -> "
                         f"heard {_ms(r['downlink_ms']['p50'])}/{_ms(r['downlink_ms']['p95'])}")
    return "\n".join(lines)
