"""``voxfleet bench chaos``: faults injected at random (seeded) into a real ``voxfleet serve``
with calls live, and what every caller, session record, reservation and webhook made of them.

The server runs two agents of ``voxfleet.testing.faulty_tone`` (the model-free tone bot, which
answers each sound with a tone and can be made to raise): ``chaos`` with two warm bots, for the
mid-call faults and restarts, and ``chaos-cold`` with none, so that each of its starts needs a
fork from its template. The bench process also runs the webhook receiver (the agents'
``webhook_url``, signatures checked) and a stand-in for Twilio's REST API, so no request leaves
this machine. Calls are mostly Twilio-protocol phone calls (``bench/twilio_caller.py``), some
Pipecat WebSocket clients, a few side by side (``chaos_core.batches``):

- bot SIGKILL / SIGSEGV / SIGSTOP mid-call: the fault is the signal; the caller is *told* once a
  phone call's ``<Connect action>`` answered the lost message (a WebSocket client: its fatal RTVI
  error, or close 1011). A bot that raises: the fault is ``fail_after_s`` after the bot started
  (its record's ``bot_started``).
- template SIGKILL / SIGSTOP during a start (``chaos-cold``): the start fails promptly and the
  caller is told, or the call is served anyway; either way the template must come back.
- control-plane kill -9 with calls live (two WebRTC calls, whose media goes straight to their
  bots, one phone call and one WebSocket client, relayed by the control plane), then the same
  command again on the same port, runtime directory and store: each WebRTC call must be resumed
  and answer a question (a tone) asked after the restart; the relayed ones are cut with it.

After the last fault and a settle, ``chaos_core.final_checks`` judges the run. Fault -> told
times come from this process's clock; the bots run on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import websockets

from voxfleet.bench import ws_client
from voxfleet.bench.chaos_core import (
    EXPECTED_END, RESTART, START_KINDS, Call, Fault, Hook, batches, check_webhooks, fault_schedule, final_checks,
    judge_phone, judge_websocket, summarize,
)
from voxfleet.bench.harness import Served
from voxfleet.bench.phone import ACCOUNT, AUTH_TOKEN, TWILIO_ENV
from voxfleet.bench.twilio_caller import CallResult, TwilioCaller, WebhookRefused
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.config import TelephonySettings
from voxfleet.procutil import pid_alive
from voxfleet.testing.faulty_tone import FAILING_CALLER
from voxfleet.transports.ice import advertise_addresses
from voxfleet.webhooks.signing import new_secret, sign

AGENT, COLD_AGENT = "chaos", "chaos-cold"
MIN_WARM = 2
HOLD_S = 15.0  # a faulted call's caller waits this long, silent, before giving up (then: not told)
START_HOLD_S = 4.0  # a call that rides out a start fault is hung up this long after its greeting
RESTART_HOLD_S = 90.0
RESTART_WEBRTC_CALLS = 2
SETTLE_S = 60.0  # pools back to their warm size (a template's restart backoff reaches 30 s)
SIGNALS = {"bot_sigkill": signal.SIGKILL, "bot_sigsegv": signal.SIGSEGV, "bot_sigstop": signal.SIGSTOP}
QUESTION = (np.sin(2 * np.pi * 300 * np.arange(24000) / 48000) * 8000).astype(np.int16)  # 0.5 s at 48 kHz
T = TypeVar("T")
Record = dict[str, Any]  # a session record, as GET /v1/sessions/{id} shows it
Talk = asyncio.Task[tuple[Any, float]]  # a call in progress: its caller's result and when it came (_timed)


class LocalPeers:
    """The webhook receiver and the stand-in for Twilio's REST API, on one loopback port."""

    def __init__(self, secret: str) -> None:
        self.hooks: list[Hook] = []
        self.secret = secret
        peers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/hooks":
                    peers.received(dict(self.headers.items()), body)
                    self.send_response(204)
                    self.end_headers()
                    return
                reply = json.dumps({"sid": self.path.rsplit("/", 1)[-1].removesuffix(".json"),
                                    "status": "completed", "account_sid": ACCOUNT}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def received(self, headers: dict[str, str], body: bytes) -> None:
        headers = {k.lower(): v for k, v in headers.items()}
        event_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
        signed = sign(self.secret, event_id, int(stamp), body) in headers.get("webhook-signature", "").split()
        event = json.loads(body)
        data = event.get("data") or {}
        self.hooks.append(Hook(event_id, event.get("type", ""), data.get("sessionId", ""), data.get("endReason"),
                               signed))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Platform:
    """The ``voxfleet serve`` under test: started, killed with -9, and started again with the same
    command, port, runtime directory and store (as systemd would after a crash)."""

    def __init__(self, workdir: Path, peers: LocalPeers) -> None:
        config = workdir / "voxfleet.toml"
        hook = f'webhook_url = "{peers.url}/hooks"\nwebhook_secret = "{peers.secret}"\n'
        config.write_text(
            "capacity_cpu_millis = 8000\n"  # tone bots are cheap: room for the warm pool and every call
            f'[[agents]]\nname = "{AGENT}"\nbot = "voxfleet.testing.faulty_tone"\nmin_warm = {MIN_WARM}\n'
            f'pool_policy = "fixed"\n{hook}'
            f'[[agents]]\nname = "{COLD_AGENT}"\nbot = "voxfleet.testing.faulty_tone"\nmin_warm = 0\n'
            f'pool_policy = "fixed"\n{hook}')
        self.env = {**TWILIO_ENV, "VOXFLEET_CONFIG": str(config), "VOXFLEET_RUNTIME_DIR": str(workdir / "run"),
                    "VOXFLEET_DATABASE_URL": f"sqlite:///{workdir}/voxfleet.db",
                    "VOXFLEET_TELEPHONY__TWILIO_API_BASE": peers.url}
        self.port = 0
        self.url = ""
        self.headers: dict[str, str] = {}
        self.servers: list[Served] = []
        self.http: httpx.AsyncClient | None = None
        self.server_5xx = 0
        self.not_ready: dict[str, int] = {}  # agent -> starts refused as not ready (503, or a phone call held)

    async def start(self) -> None:
        server = Served([sys.executable, "-m", "voxfleet.cli", "serve", "--port", str(self.port),
                         "--advertise", "127.0.0.1"], self.env, ready=r"voxfleet: ready, open (http://\S+)")
        self.servers.append(server)
        self.url = await server.wait_ready()
        self.port = int(self.url.rsplit(":", 1)[1])
        self.headers = server.headers or self.headers  # the admin key is printed at the first start only
        if self.http is None:
            self.http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=10,
                                          event_hooks={"response": [self._count]})

    def alive(self) -> bool:
        return bool(self.servers) and self.servers[-1].proc.poll() is None

    def kill9(self) -> None:
        proc = self.servers[-1].proc
        proc.kill()
        proc.wait()

    async def _count(self, response: httpx.Response) -> None:
        self.count_status(response.status_code, response.request.url.path)

    def count_status(self, status: int, path: str = "", agent: str = "-") -> None:
        if status == 503 and path != "/healthz":
            self.refused_not_ready(agent)
        elif status >= 500 and status != 503:
            self.server_5xx += 1

    def refused_not_ready(self, agent: str) -> None:
        self.not_ready[agent] = self.not_ready.get(agent, 0) + 1

    async def get(self, path: str) -> Any:
        """The JSON at `path`; None while the server is down or answers an error."""
        assert self.http is not None
        try:
            reply = await self.http.get(path)
        except httpx.HTTPError:
            return None
        return reply.json() if reply.status_code in (200, 503) else None

    async def until(self, check: Callable[[], Awaitable[T | None]], timeout: float, every: float = 0.1) -> T | None:
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(every)

    async def record_when(self, session_id: str, ok: Callable[[dict[str, Any]], Any], timeout: float) -> Record | None:
        async def check() -> Record | None:
            record = await self.get(f"/v1/sessions/{session_id}")
            return record if record and "state" in record and ok(record) else None
        return await self.until(check, timeout)

    async def ended(self, session_id: str, timeout: float = 15) -> Record | None:
        return await self.record_when(session_id, lambda r: r["state"] == "ended", timeout)

    async def template(self, agent: str) -> dict[str, Any] | None:
        health = await self.get("/healthz")
        return None if not health or "runtime" not in health else health["runtime"]["templates"][agent]

    async def settled(self, timeout: float = SETTLE_S) -> dict[str, Any] | None:
        """No call live, every template up, the warm pool at its size: the next batch starts clean."""
        async def check() -> dict[str, Any] | None:
            health, cap = await self.get("/healthz"), await self.get("/v1/capacity")
            if not health or health.get("status") != "ok" or not cap:
                return None
            pools = cap["agents"]
            busy = any(p["active"] or p["warming"] for p in pools.values())
            return None if busy or pools[AGENT]["warm"] < MIN_WARM else cap
        return await self.until(check, timeout, every=0.2)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        for server in self.servers:
            server.stop()

    def logs(self) -> list[str]:
        return [s.log.name for s in self.servers]


class CallRefused(Exception):
    """The caller was answered without a call: a goodbye, or an HTTP error at /start."""


class ChaosBench:
    def __init__(self, platform: Platform, concurrency: int) -> None:
        self.platform = platform
        self.concurrency = concurrency
        self.calls: list[Call] = []
        self.problems: list[str] = []
        self.downtime_s: list[float] = []
        self.wrong_reasons: list[dict[str, Any]] = []  # sessions that ended, but not as their fault should
        self.lost_message = TelephonySettings().lost_message
        self.numbers = 0

    @property
    def caller(self) -> TwilioCaller:
        return TwilioCaller(self.platform.url, AUTH_TOKEN, account_sid=ACCOUNT)

    def new_call(self, fault: Fault, transport: str) -> Call:
        call = Call(fault.index, fault.kind, transport)
        self.calls.append(call)
        return call

    async def run(self, faults: list[Fault]) -> None:
        groups = batches(faults, self.concurrency)
        for number, group in enumerate(groups, 1):
            await asyncio.gather(*(self.inject(fault) for fault in group))
            print(f"  batch {number}/{len(groups)}: " + ", ".join(f"{f.kind} ({f.transport})" for f in group),
                  file=sys.stderr, flush=True)
            if await self.platform.settled() is None:
                cap = await self.platform.get("/v1/capacity")
                pools = {k: {n: v[n] for n in ("warm", "warming", "active")} for k, v in (cap or {}).get("agents", {}).items()}
                self.problems.append(f"after batch {number} the pools did not settle within {SETTLE_S:.0f}s: {pools}")

    async def inject(self, fault: Fault) -> None:
        try:
            if fault.kind == RESTART:
                await self.restart(fault)
            elif fault.kind in START_KINDS:
                await self.start_fault(fault)
            else:
                await self.bot_fault(fault)
        except Exception as exc:  # noqa: BLE001 - one fault's failure is reported, the run goes on
            self.problems.append(f"fault #{fault.index} {fault.kind}: the bench failed: {type(exc).__name__}: {exc}")
            if not self.platform.alive():  # the run goes on against a server
                await self.platform.start()

    # -- one caller ---------------------------------------------------------------------------
    async def open_call(self, call: Call, agent: str, hold_s: float, body: dict[str, Any] | None = None,
                        from_: str | None = None) -> Talk:
        """Start a call and keep it up, silent, for `hold_s` (the task ends when it is over)."""
        if call.transport == "twilio":
            self.numbers += 1
            try:
                call_sid, answers = await self.caller.dial(agent, from_=from_ or f"+1555{2000000 + self.numbers}")
            except WebhookRefused as exc:
                self.platform.count_status(exc.status, agent=agent)
                raise CallRefused(f"webhook answered {exc.status}") from exc
            answer = answers[-1]
            if not answer.stream_url:
                raise CallRefused(f"no stream: {' '.join(answer.says)}{' <Hangup>' if answer.hangup else ''}")
            call.session_id = answer.parameters["session"]
            if len(answers) > 1:  # held: not ready, or at capacity
                call.detail = f"held {len(answers) - 1}x first; "
                self.platform.refused_not_ready(agent)
            speech = [np.zeros(int(8000 * hold_s), np.int16)]
            return asyncio.create_task(_timed(self.caller.stream(answer, call_sid, speech, listen_s=hold_s)))
        started = await self.start_websocket(agent, body)
        call.session_id = started["sessionId"]
        speech = [np.zeros(int(16000 * hold_s), np.int16)]
        return asyncio.create_task(_timed(ws_client.talk(started, speech, listen_s=hold_s)))

    async def start_websocket(self, agent: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """POST /start as a client app does: a 503 (not ready) is retried after its Retry-After."""
        for _ in range(30):
            try:
                return await ws_client.start_websocket_session(self.platform.url, agent, body, self.platform.headers)
            except httpx.HTTPStatusError as exc:
                self.platform.count_status(exc.response.status_code, "/start", agent)
                if exc.response.status_code != 503:
                    raise CallRefused(f"/start answered {exc.response.status_code}: {exc.response.text}") from exc
                await asyncio.sleep(min(2.0, float(exc.response.headers.get("Retry-After", 1))))
        raise CallRefused("/start answered 503 (not ready) for 30 tries")

    async def finish(self, call: Call, talk: Talk, timeout: float) -> None:
        """Wait for the call to end and judge what its caller got."""
        try:
            result, call.answered_at = await asyncio.wait_for(talk, timeout)
        except asyncio.TimeoutError:
            call.outcome, call.detail = "silent", call.detail + f"the call was still up after {timeout:.0f}s"
            return
        if isinstance(result, BaseException):
            call.outcome, call.detail = "silent", call.detail + f"the caller failed: {type(result).__name__}: {result}"
        elif isinstance(result, CallResult):
            after = result.after
            call.outcome, detail = judge_phone(
                close_code=result.close_code, stopped_by_caller=result.stopped_by_caller,
                says=after.says if after else None, hangup=bool(after and after.hangup),
                after_error=result.after_error, lost_message=self.lost_message, heard_audio=result.ttfw_ms is not None)
            call.detail += detail
        else:
            call.outcome, detail = judge_websocket(
                close_code=result.close_code, close_reason=result.close_reason, rtvi=result.rtvi,
                heard_audio=result.ttfw_ms is not None, closed_by_caller=result.hung_up)
            call.detail += detail

    async def expect_end(self, call: Call, reasons: tuple[str, ...]) -> Record | None:
        if call.session_id is None:
            return None
        record = await self.platform.ended(call.session_id)
        if record is None and await self.platform.get(f"/v1/sessions/{call.session_id}") is None:
            return None  # unknown to the server: the final checks name it
        if record is None:
            self.problems.append(f"{call.kind}: session {call.session_id} not ended 15 s after its call")
        elif record["endReason"] not in reasons:
            self.wrong_reasons.append({"session": call.session_id, "kind": call.kind, "endReason": record["endReason"],
                                       "endDetail": record.get("endDetail"), "expected": list(reasons)})
            self.problems.append(f"{call.kind}: session {call.session_id} ended {record['endReason']} "
                                 f"({record.get('endDetail')}), expected {' or '.join(reasons)}")
        return record

    async def none_left_stopped(self, pid: int, what: str) -> None:
        """A process we stopped must be gone once its fault is over: the platform kills what stops."""
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            self.problems.append(f"{what} pid {pid}, stopped by the bench, was still there after its fault "
                                 "was over; the bench killed it")

    # -- the faults ---------------------------------------------------------------------------
    async def bot_fault(self, fault: Fault) -> None:
        call = self.new_call(fault, fault.transport)
        raises = fault.kind == "bot_raise"
        phone = fault.transport == "twilio"
        fail_after = (1.0 if phone else fault.delay_s) if raises else None  # a phone call's body is its webhook
        try:
            talk = await self.open_call(call, AGENT, HOLD_S, body={"fail_after_s": fail_after} if raises else None,
                                        from_=FAILING_CALLER if raises and phone else None)
        except CallRefused as exc:
            call.outcome, call.detail = "refused", str(exc)
            return
        assert call.session_id is not None
        opened_at = time.time()
        record = await self.platform.record_when(call.session_id, lambda r: r["state"] == "active" and r["pid"], 15)
        pid = record["pid"] if record else None
        if pid is None:
            self.problems.append(f"{fault.kind}: session {call.session_id} was not active 15 s after its call began")
        elif not raises:
            await asyncio.sleep(fault.delay_s)
            call.fault_at = time.time()
            os.kill(pid, SIGNALS[fault.kind])
        await self.finish(call, talk, HOLD_S + 20)
        ended = await self.expect_end(call, (EXPECTED_END[fault.kind],))
        if raises and fail_after is not None:
            started_ms = ((ended or {}).get("timingsMs") or {}).get("bot_started")
            base = ended["createdAt"] + started_ms / 1000 if ended and started_ms is not None else opened_at
            call.fault_at = base + fail_after
        if fault.kind == "bot_sigstop" and pid:
            await self.none_left_stopped(pid, f"session {call.session_id}: bot")

    async def start_fault(self, fault: Fault) -> None:
        before = await self.platform.until(lambda: self._template_up(COLD_AGENT), SETTLE_S)
        if before is None:
            self.problems.append(f"fault #{fault.index}: the {COLD_AGENT} template was not up to be faulted")
            return
        call = self.new_call(fault, fault.transport)
        pid = before["pid"]
        try:
            if fault.kind == "template_sigstop":
                os.kill(pid, signal.SIGSTOP)
                call.fault_at = time.time()
                talk = await self.open_call(call, COLD_AGENT, START_HOLD_S)
            else:
                opening = asyncio.create_task(self.open_call(call, COLD_AGENT, START_HOLD_S))
                await asyncio.sleep(fault.delay_s)  # the start is on its way: its webhook or /start
                call.fault_at = time.time()
                os.kill(pid, signal.SIGKILL)
                bystander = asyncio.create_task(self.bystander(fault))
                talk = await opening
            await self.finish(call, talk, START_HOLD_S + 30)
        except CallRefused as exc:
            call.outcome, call.detail, call.answered_at = "refused", str(exc), time.time()
        if fault.kind == "template_sigkill":
            await bystander
        if call.outcome == "told":
            await self.expect_end(call, ("start_failed",))
        elif call.session_id is not None:
            await self.expect_end(call, ("hangup", "start_failed"))

        async def back() -> dict[str, Any] | None:
            status = await self._template_up(COLD_AGENT)
            return status if status and status["pid"] != pid else None
        if await self.platform.until(back, SETTLE_S) is None:
            self.problems.append(f"{fault.kind}: the {COLD_AGENT} template (pid {pid}) was not replaced within "
                                 f"{SETTLE_S:.0f}s")
        if fault.kind == "template_sigstop":
            await self.none_left_stopped(pid, f"agent {COLD_AGENT}: template")

    async def bystander(self, fault: Fault) -> None:
        """While the cold agent's template restarts, a call to the warm agent (its own template
        untouched, warm bots ready): it should simply be served."""
        call = self.new_call(fault, "websocket")
        await asyncio.sleep(0.2)
        try:
            talk = await self.open_call(call, AGENT, 1.0)
        except CallRefused as exc:
            call.outcome, call.detail, call.answered_at = "refused", f"bystander on {AGENT}: {exc}", time.time()
            return
        await self.finish(call, talk, 30)
        call.detail = f"bystander on {AGENT}: {call.detail}"
        await self.expect_end(call, ("hangup",))

    async def _template_up(self, agent: str) -> dict[str, Any] | None:
        status = await self.platform.template(agent)
        return status if status and status["ready"] and status["pid"] else None

    async def restart(self, fault: Fault) -> None:
        callers = [WebRTCCaller(self.platform.url, agent=AGENT, headers=self.platform.headers)
                   for _ in range(RESTART_WEBRTC_CALLS)]
        direct = [self.new_call(fault, "webrtc") for _ in callers]
        relayed = [self.new_call(fault, "twilio"), self.new_call(fault, "websocket")]
        pending = self.new_call(fault, "websocket")  # a cold start under way at the kill
        try:
            for caller, call in zip(callers, direct):
                call.session_id = (await caller.connect()).session_id
                await caller.wait_first_audio(timeout=15)
            talks = [await self.open_call(call, AGENT, RESTART_HOLD_S) for call in relayed]
            for call in direct + relayed:
                assert call.session_id is not None
                await self.platform.record_when(call.session_id, lambda r: r["state"] == "active", 15)
            starting = await self.start_websocket(COLD_AGENT, None)
            pending.session_id = starting["sessionId"]
            await asyncio.sleep(fault.delay_s)
            fault_at = time.time()
            for call in direct + relayed + [pending]:
                call.fault_at = fault_at
            self.platform.kill9()
            await asyncio.gather(self.platform.start(), self.connect_late(pending, starting),
                                 *(self.finish(c, t, 60) for c, t in zip(relayed, talks)))
            self.downtime_s.append(round(time.time() - fault_at, 2))
            for caller, call in zip(callers, direct):
                await self.keeps_talking(caller, call)
        finally:
            for caller in callers:
                await caller.close()
        for call in direct:
            await self.expect_end(call, ("hangup",))
        # timeout: its stream connected just before the kill and was not stored as such, or it was
        # still starting; control_restart: its stream went with the control plane, or its bot never rejoined
        for call in relayed + [pending]:
            await self.expect_end(call, ("control_restart", "timeout"))

    async def connect_late(self, call: Call, started: dict[str, Any]) -> None:
        """A client whose session was starting at the kill connects its WebSocket: the server is gone."""
        try:
            result = await ws_client.talk(started, [np.zeros(1600, np.int16)], listen_s=0.1, after_greeting=False)
        except (OSError, websockets.InvalidHandshake) as exc:
            call.outcome, call.detail = "cut", f"could not connect: {type(exc).__name__}: {exc}"
        else:
            call.outcome, call.detail = "served", f"connected; closed {result.close_code}"
        call.answered_at = time.time()

    async def keeps_talking(self, caller: WebRTCCaller, call: Call) -> None:
        """After the restart: resumed, and a question asked now is answered."""
        assert call.session_id is not None
        record = await self.platform.record_when(call.session_id, lambda r: "resumed" in r["timingsMs"], 30)
        if record is None:
            call.outcome, call.kept_talking, call.detail = "silent", False, "not resumed within 30 s of the restart"
            return
        spoken_at = await caller.say(QUESTION)
        try:
            answer_s = await caller.wait_bot_audio_after(spoken_at, timeout=5)
        except TimeoutError:
            call.outcome, call.kept_talking, call.detail = "silent", False, "resumed, but no answer within 5 s"
            return
        call.outcome, call.kept_talking = "served", True
        call.detail = f"resumed; a question after the restart answered in {answer_s * 1000:.0f} ms"

    # -- the end ------------------------------------------------------------------------------
    async def records(self) -> list[dict[str, Any]]:
        """Every session of the run: those the callers know, and any other the server lists."""
        listed = await self.platform.get("/v1/sessions?limit=1000") or {"sessions": []}
        ids = {c.session_id for c in self.calls if c.session_id} | {s["sessionId"] for s in listed["sessions"]}
        out = []
        for session_id in sorted(ids):
            record = await self.platform.get(f"/v1/sessions/{session_id}")
            if record is not None and record.get("state") != "ended":
                record = await self.platform.ended(session_id, timeout=30) or record
            out.append(record or {"sessionId": session_id, "state": "missing"})
        return out


async def _timed(work: Awaitable[T]) -> tuple[T | BaseException, float]:
    """The result (or the error) of `work`, and the wall clock when it came."""
    try:
        result: T | BaseException = await work
    except Exception as exc:  # noqa: BLE001 - judged as the caller's outcome
        result = exc
    return result, time.time()


def run_processes(marker: str) -> list[int]:
    """This run's templates and bots still alive: each carries its control socket's path (`marker`)
    on its command line (a bot is a fork of its template)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found


async def outlived(marker: str, timeout: float = 10) -> list[int]:
    """After the server's orderly stop: what of the run is still alive (then killed)."""
    deadline = time.monotonic() + timeout
    while (left := run_processes(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def asgi_errors(log_paths: list[str]) -> list[str]:
    """Unhandled exceptions in the control plane's request handlers, from its logs."""
    found = []
    for path in log_paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            if "Exception in ASGI application" in line:
                found.append(f"{path}: {line.strip()}")
    return found


async def run_chaos_bench(n: int, seed: int, *, concurrency: int = 3, restart_every: int | None = None) -> dict[str, Any]:
    advertise_addresses(["127.0.0.1"])
    faults = fault_schedule(n, seed, restart_every=restart_every)
    peers = LocalPeers(new_secret())
    workdir = Path(tempfile.mkdtemp(prefix="voxfleet-bench-chaos-"))
    platform = Platform(workdir, peers)
    marker = str(workdir / "run" / "control.sock")
    bench = ChaosBench(platform, concurrency)
    started = time.monotonic()
    try:
        await platform.start()
        if await platform.settled() is None:
            raise RuntimeError(f"the warm pool did not fill; log: {platform.logs()[-1]}")
        await bench.run(faults)
        records = await bench.records()
        records_by_id = {r["sessionId"]: r for r in records}

        async def hooks_in() -> bool:
            return not check_webhooks(list(records_by_id.values()), peers.hooks)["lost"]
        await platform.until(hooks_in, 30, every=0.5)
        await asyncio.sleep(1.0)  # a duplicate would come now
        capacity = await platform.get("/v1/capacity") or {"reservations": -1, "agents": {}}
        health = await platform.get("/healthz") or {}
        live_bots = (health.get("runtime") or {}).get("bots", -1)
        errors = asgi_errors(platform.logs())
        checks = final_checks(bench.calls, records, list(peers.hooks), capacity, live_bots, platform.server_5xx,
                              processes=len(run_processes(marker)), templates=2)
        extra = bench.problems + [f"unhandled exception in a request: {e}" for e in errors[:10]]
    finally:
        await platform.aclose()
        peers.close()
        left = await outlived(marker)
    if left:
        extra.append(f"{len(left)} process(es) of the run outlived the server's orderly stop (pids {left}); "
                     "killed by the bench")
    report = summarize(faults, bench.calls, checks, seed=seed, seconds=time.monotonic() - started,
                       extra_problems=extra, restart_downtime_s=bench.downtime_s, not_ready=platform.not_ready)
    report["wrong_end_reasons"] = bench.wrong_reasons
    report["server_logs"] = platform.logs()
    return report
