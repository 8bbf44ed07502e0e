"""``voxfleet bench outbound``: outbound calls, from the request to the callee hearing the bot.

One ``voxfleet serve`` with the offline assistant, its Twilio REST API pointed at a local
stand-in (``voxfleet.testing.twilio_standin``: Twilio cannot be reached from here) that does
what Twilio does with a call it places: status callbacks, the signed answer webhook, the media
stream. Its callee answers at once, hears the greeting, asks one spoken question and hears the
answer. Per call:

- dial: ``POST /v1/agents/{agent}/calls`` sent -> its 201 (the bot reserved and Twilio asked);
- answer -> first word: the callee answering (the answer webhook sent) -> the first non-silent
  audio it hears; the figure the issue's goal (<= 300 ms warm) is about;
- request -> first word: the whole path, with the stand-in's ring time (0) in it;
- V2V: the end of the callee's question -> the first audio of the answer.

``--record`` alternates the calls between two agents of the assistant that differ only in
``record``: what a recording costs (V2V and first word, on / off).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bench.harness import Served, percentile, pool_settled, shared_llm
from voxfleet.bench.speech import speak
from voxfleet.bots.llm_server import free_port
from voxfleet.testing.twilio_standin import Callee, TwilioStandIn

AUTH_TOKEN = "bench-auth-token-0123456789"
ACCOUNT = "AC" + "b" * 32
CALLEE = "+15005550100"
FROM = "+15005550006"


def _config(record: bool) -> str:
    agents = [("assistant", False)] + ([("assistant-rec", True)] if record else [])
    return "".join(f'[[agents]]\nname = "{name}"\nbot = "voxfleet.bots.assistant"\nmin_warm = 1\n'
                   f'pool_policy = "fixed"\nrecord = {"true" if rec else "false"}\nprofile = "agent-1x"\n\n'
                   for name, rec in agents)


async def _one(http: httpx.AsyncClient, twilio: TwilioStandIn, agent: str) -> dict[str, Any]:
    await pool_settled(http, agent, 1)
    sent = time.monotonic()
    reply = await http.post(f"/v1/agents/{agent}/calls", json={"to": CALLEE, "from": FROM})
    dial_ms = (time.monotonic() - sent) * 1000
    if reply.status_code != 201:
        raise RuntimeError(f"dial answered {reply.status_code}: {reply.text[:200]}")
    placed = await twilio.wait(reply.json()["carrierCallId"], timeout=120)
    result = placed.result
    if result is None or result.ttfw_ms is None or result.started_at is None or placed.answered_at is None:
        raise RuntimeError(f"the callee heard nothing (events {placed.events}, errors {placed.callback_errors})")
    first_word = result.started_at + result.ttfw_ms / 1000
    return {"dial_ms": round(dial_ms, 1), "answer_to_word_ms": round((first_word - placed.answered_at) * 1000, 1),
            "request_to_word_ms": round((first_word - sent) * 1000, 1),
            "v2v_ms": result.v2v_ms[0] if result.v2v_ms else None, "session": reply.json()["sessionId"]}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    out: dict[str, Any] = {"calls": len(rows), "failed": len(rows) - len(ok),
                           "errors": [r["error"] for r in rows if "error" in r]}
    for key in ("dial_ms", "answer_to_word_ms", "request_to_word_ms", "v2v_ms"):
        values = [r[key] for r in ok if r.get(key) is not None]
        out[key] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}
    return out


async def run_outbound_bench(calls: int, record: bool, question_text: str) -> dict[str, Any]:
    question = speak(question_text, sample_rate=8000)
    llm, _bot_env, serve_env = await shared_llm()
    port = free_port()
    twilio = await TwilioStandIn(ACCOUNT, AUTH_TOKEN).start(port)
    twilio.callees[CALLEE] = Callee("answer", ring_s=0.0, speech=[question], listen_s=60)
    config = Path(tempfile.mkdtemp(prefix="voxfleet-bench-")) / "voxfleet.toml"
    config.write_text(_config(record))
    server = Served([sys.executable, "-m", "voxfleet.cli", "serve", "--dev", "--port", "0", "--log-level", "WARNING"],
                    {**serve_env, "VOXFLEET_CONFIG": str(config), "TWILIO_ACCOUNT_SID": ACCOUNT,
                     "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "VOXFLEET_TELEPHONY__TWILIO_API_BASE": twilio.url},
                    ready=r"voxfleet: ready, open (http://\S+)")
    agents = ["assistant", "assistant-rec"] if record else ["assistant"]
    rows: dict[str, list[dict[str, Any]]] = {agent: [] for agent in agents}
    try:
        url = await server.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for index in range(calls):
                for agent in agents:  # alternating: both series see the same machine
                    try:
                        row = await _one(http, twilio, agent)
                    except Exception as exc:  # noqa: BLE001 - a failed call is counted, not fatal
                        row = {"error": f"{type(exc).__name__}: {exc}"}
                    rows[agent].append(row)
                    print(f"  {agent} call {index + 1}/{calls}: {row}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        await twilio.stop()
        await llm.aclose()
    report: dict[str, Any] = {"calls": calls, "question": question_text,
                              "series": {agent: _summary(r) for agent, r in rows.items()}}
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"outbound calls through Twilio (local REST stand-in), {report['calls']} sequential calls per agent, "
             "offline assistant, warm bot",
             f"{'agent':<16}{'dial p50':>10}{'answer->word p50':>18}{'p95':>8}{'request->word p50':>19}"
             f"{'V2V p50':>10}{'V2V p95':>10}{'failed':>8}"]
    for agent, s in report["series"].items():
        lines.append(f"{agent:<16}{s['dial_ms']['p50']:>8.0f}ms{s['answer_to_word_ms']['p50']:>16.0f}ms"
                     f"{s['answer_to_word_ms']['p95']:>6.0f}ms{s['request_to_word_ms']['p50']:>17.0f}ms"
                     f"{s['v2v_ms']['p50']:>8.0f}ms{s['v2v_ms']['p95']:>8.0f}ms{s['failed']:>8}")
    series = report["series"]
    if "assistant-rec" in series:
        on, off = series["assistant-rec"], series["assistant"]
        lines.append("recording on / off: " + ", ".join(
            f"{label} {on[key][q] / off[key][q]:.2f}x" for label, key, q in (
                ("V2V p50", "v2v_ms", "p50"), ("V2V p95", "v2v_ms", "p95"),
                ("answer->word p50", "answer_to_word_ms", "p50")) if off[key][q]))
    return "\n".join(lines)
