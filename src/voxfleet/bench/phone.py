"""``voxfleet bench phone``: phone-call time to first word (warm and cold), voice-to-voice, and the
media relay's added latency per frame, against Pipecat's dev runner serving the same bot.

Each call is placed by a carrier's caller, written from that carrier's documentation
(``--provider``: ``PROVIDERS`` below; Twilio's is ``bench/twilio_caller.py``): the signed webhook,
its markup, then the media stream in real time: greeting, one spoken question, the answer.

- phone TTFW: the ``start`` event sent -> the first ``media`` frame with non-silent audio received;
- V2V: the end of the question -> the first non-silent audio after it;
- relay per frame (voxfleet only, from the session record): caller frame received by the control
  plane -> delivered to the bot process (inbound), and the reverse (outbound).

The dev runner has no webhook of its own for a local caller (its XML points at a wss:// proxy),
so its calls open its ``/ws`` directly (``-t <provider>``); the TTFW clock starts at ``start`` for both.
All servers share one LLM process and run one after the other on this machine.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from voxfleet.bench.exotel_caller import ExotelCaller
from voxfleet.bench.harness import Served, latency_table, percentile, pool_settled, shared_llm
from voxfleet.bench.plivo_caller import PlivoAnswer, PlivoCaller
from voxfleet.bench.speech import speak
from voxfleet.bench.telnyx_caller import LOCAL_ACCOUNT as TELNYX_ACCOUNT
from voxfleet.bench.telnyx_caller import TelnyxCaller, call_control_id
from voxfleet.bench.telnyx_caller import direct_answer as telnyx_direct_answer
from voxfleet.bench.twilio_caller import TwilioCaller, TwimlAnswer, sid
from voxfleet.bots.llm_server import free_port

AUTH_TOKEN = "bench-auth-token-0123456789"
ACCOUNT = "AC" + "b" * 32  # no request leaves this machine: Pipecat's own REST hang-up fails offline
TWILIO_ENV = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT}
PLIVO_ID = "MA" + "B" * 18
PLIVO_ENV = {"PLIVO_AUTH_ID": PLIVO_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
EXOTEL_ENV = {"EXOTEL_API_KEY": "bench-exotel-key", "EXOTEL_API_TOKEN": AUTH_TOKEN}


@dataclass(frozen=True)
class Provider:
    """A carrier the bench can call through: its caller (``dial(agent)`` -> (call id, answers),
    ``stream(answer, call id, speech, listen_s=)`` -> a result with ``ttfw_ms`` and ``v2v_ms``),
    the credentials voxfleet and the dev runner's bot both get (no request leaves this machine:
    Pipecat's own REST hang-ups fail offline), the voxfleet session an answer names, and an
    answer that streams straight to the dev runner's ``/ws`` (with a fresh call id)."""

    label: str
    env: dict[str, str]
    caller: Callable[[str], Any]
    session_of: Callable[[Any], str]
    direct: Callable[[str], tuple[Any, str]]


PROVIDERS: dict[str, Provider] = {
    "twilio": Provider("Twilio Media Streams", TWILIO_ENV, lambda url: TwilioCaller(url, AUTH_TOKEN, account_sid=ACCOUNT),
                       lambda answer: answer.parameters["session"],
                       lambda ws_url: (TwimlAnswer(xml="", stream_url=ws_url), sid("CA"))),
    "plivo": Provider("Plivo Audio Streams", PLIVO_ENV, lambda url: PlivoCaller(url, AUTH_TOKEN, auth_id=PLIVO_ID),
                      lambda answer: answer.session,
                      lambda ws_url: (PlivoAnswer(xml="", stream_url=ws_url), str(uuid.uuid4()))),
    "exotel": Provider("Exotel Voicebot applet", EXOTEL_ENV,
                       lambda url: ExotelCaller(url, EXOTEL_ENV["EXOTEL_API_KEY"], AUTH_TOKEN),
                       lambda stream_url: stream_url.split("token=", 1)[1].split(".", 1)[0],
                       lambda ws_url: (ws_url, sid("CA"))),
    "telnyx": Provider("Telnyx TeXML Media Streaming", TELNYX_ACCOUNT.env, lambda url: TelnyxCaller(url, TELNYX_ACCOUNT),
                       lambda answer: answer.parameters["session"],
                       lambda ws_url: (telnyx_direct_answer(ws_url), call_control_id())),
}


async def _call(caller: Any, answer: Any, call_sid: str, question) -> dict[str, Any]:
    result = await caller.stream(answer, call_sid, [question], listen_s=60)
    if result.ttfw_ms is None or not result.v2v_ms:
        raise RuntimeError(f"call incomplete: ttfw {result.ttfw_ms}, v2v {result.v2v_ms}")
    return {"ttfw_ms": result.ttfw_ms, "v2v_ms": result.v2v_ms[0]}


async def voxfleet_series(calls: int, min_warm: int, question, serve_env: dict[str, str],
                          provider: Provider = PROVIDERS["twilio"]) -> dict[str, Any]:
    config = Path(tempfile.mkdtemp(prefix="voxfleet-bench-")) / "voxfleet.toml"
    config.write_text(f'[[agents]]\nname = "assistant"\nbot = "voxfleet.bots.assistant"\n'
                      f'min_warm = {min_warm}\npool_policy = "fixed"\n')
    server = Served([sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0", "--log-level", "WARNING"],
                    {**serve_env, **provider.env, "VOXFLEET_CONFIG": str(config)},
                    ready=r"voxfleet: ready, open (http://\S+)")
    rows: list[dict[str, Any]] = []
    try:
        url = await server.wait_ready()
        caller = provider.caller(url)
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=server.headers) as http:
            for index in range(calls):
                await pool_settled(http, "assistant", min_warm)
                try:
                    call_sid, answers = await caller.dial("assistant")
                    row = await _call(caller, answers[-1], call_sid, question)
                    record = await _ended(http, provider.session_of(answers[-1]))
                    row.update(start=record["start"], relay=record["latency"].get("relayMs", {}),
                               server_ttfw_ms=record["latency"]["ttfwMs"])
                except Exception as exc:  # noqa: BLE001 - a failed call is counted, not fatal
                    row = {"error": f"{type(exc).__name__}: {exc}"}
                rows.append(row)
                print(f"  voxfleet ({'warm' if min_warm else 'cold'}) call {index + 1}/{calls}: {row}",
                      file=sys.stderr, flush=True)
    finally:
        server.stop()
    return summarize(rows)


async def peer_series(calls: int, question, bot_env: dict[str, str], provider: str = "twilio") -> dict[str, Any]:
    port = free_port()
    carrier = PROVIDERS[provider]
    peer = Served([sys.executable, "-m", "voxfleet.testing.devrunner", "voxfleet.bots.assistant", "-t", provider,
                   "-x", f"127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(port)],
                  {**bot_env, **carrier.env}, ready=r"(Uvicorn running on http://\S+)",
                  url_from=f"http://127.0.0.1:{port}")
    rows: list[dict[str, Any]] = []
    try:
        await peer.wait_ready()
        await asyncio.sleep(1.0)
        caller = carrier.caller(f"http://127.0.0.1:{port}")
        for index in range(calls):
            try:
                rows.append(await _call(caller, *carrier.direct(f"ws://127.0.0.1:{port}/ws"), question))
            except Exception as exc:  # noqa: BLE001
                rows.append({"error": f"{type(exc).__name__}: {exc}"})
            print(f"  pipecat dev runner call {index + 1}/{calls}: {rows[-1]}", file=sys.stderr, flush=True)
            await asyncio.sleep(1.0)
    finally:
        peer.stop()
    return summarize(rows)


async def _ended(http: httpx.AsyncClient, session_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        record = (await http.get(f"/v1/sessions/{session_id}")).json()
        if record["state"] == "ended":
            return record
        await asyncio.sleep(0.2)
    raise TimeoutError(f"session {session_id} did not end")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    ttfw, v2v = [r["ttfw_ms"] for r in ok], [r["v2v_ms"] for r in ok]
    out: dict[str, Any] = {
        "calls": len(rows), "failed": len(rows) - len(ok), "starts": sorted({r.get("start", "-") for r in ok}),
        "ttfw_ms": {"p50": percentile(ttfw, 0.5), "p95": percentile(ttfw, 0.95), "all": ttfw},
        "v2v_ms": {"p50": percentile(v2v, 0.5), "p95": percentile(v2v, 0.95)},
        "errors": [r["error"] for r in rows if "error" in r],
    }
    relays = [r["relay"] for r in ok if r.get("relay")]
    if relays:
        out["relay_ms"] = {
            direction: {"frames": sum(r[direction].get("frames", 0) for r in relays),
                        "p50_median": percentile([r[direction]["p50"] for r in relays if "p50" in r[direction]], 0.5),
                        "p99_max": max((r[direction]["p99"] for r in relays if "p99" in r[direction]), default=None)}
            for direction in ("inbound", "outbound")}
    return out


async def run_phone_bench(calls: int, include_peer: bool, speech_text: str, provider: str = "twilio") -> dict[str, Any]:
    question = speak(speech_text, sample_rate=8000)
    carrier = PROVIDERS[provider]
    llm, bot_env, serve_env = await shared_llm()
    report: dict[str, Any] = {"calls": calls, "question": speech_text, "provider": provider, "label": carrier.label}
    try:
        report["voxfleet_warm"] = await voxfleet_series(calls, 1, question, serve_env, carrier)
        report["voxfleet_cold"] = await voxfleet_series(calls, 0, question, serve_env, carrier)
        if include_peer:
            report["pipecat_dev_runner"] = await peer_series(calls, question, bot_env, provider)
    finally:
        await llm.aclose()
    report["text"] = render(report)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"phone calls ({report.get('label', 'Twilio Media Streams')}), {report['calls']} sequential calls each, "
             "offline assistant",
             *latency_table(report, ("voxfleet_warm", "voxfleet_cold", "pipecat_dev_runner"))]
    peer, warm = report.get("pipecat_dev_runner"), report.get("voxfleet_warm")
    if peer and warm and warm["ttfw_ms"]["p50"]:
        lines.append(f"ratio (dev runner / voxfleet warm): TTFW p50 {peer['ttfw_ms']['p50'] / warm['ttfw_ms']['p50']:.2f}x, "
                     f"V2V p50 {peer['v2v_ms']['p50'] / warm['v2v_ms']['p50']:.2f}x")
    for key in ("voxfleet_warm", "voxfleet_cold"):
        relay = (report.get(key) or {}).get("relay_ms")
        if relay:
            lines.append(f"relay per frame ({key}): " + ", ".join(
                f"{d} {v['frames']} frames p50 {v['p50_median']:.3f} ms p99 {v['p99_max']:.3f} ms"
                for d, v in relay.items() if v["p99_max"] is not None))
    return "\n".join(lines)
