"""The bot side: the small process that hosts ONE session, then exits.

A bot starts either with its session (cold start) or without one (a warm bot): then it runs
the bot module's optional ``async def warmup()`` (session-independent set-up that must happen
after the fork), reports ``warm_ready`` and waits to be assigned a session. Either way it
connects back to the control socket, answers the session's WebRTC signaling with Pipecat's
own ``SmallWebRTCRequestHandler`` (media then flows client <-> this process directly), runs the
user's unchanged ``bot(runner_args)`` with ``SmallWebRTCRunnerArguments``, and reports how the
session ended before it exits. Exit code: 0 when the bot returned, 1 when it raised.

The same session logic is driven two ways: by the UNIX control socket (``run()``, the local
backend's forked bots) or by direct method calls (``assign`` / ``offer`` / ``add_ice`` / ``stop``
and ``finish()``; the Ray backend's bot actor), with observations going to an ``emit`` callback.

The session's ICE servers (TURN credentials minted for this session) arrive with the session,
and the bot's peer connection uses them. With ``media_ports`` set, the process runs its event
loop from ``transports.media_ports``, so every UDP socket it opens for media is in that range.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from voxfleet.exceptions import MediaPortsExhausted
from voxfleet.runtime import wire

log = logging.getLogger(__name__)

BotFunction = Callable[[Any], Awaitable[Any]]


class BotHost:
    def __init__(
        self,
        *,
        control_socket: str | None,
        bot_id: str,
        session_id: str | None,
        agent: str,
        bot: BotFunction,
        warmup: Callable[[], Awaitable[Any]] | None,
        body: Any,
        ice_servers: list[dict[str, Any]],
        log_level: str,
        idle_timeout: float = 60.0,
        reconnect_s: float = 15.0,
        emit: Callable[[str, dict[str, Any]], None] | None = None,
        preload: list[dict[str, Any]] | None = None,
    ) -> None:
        from pipecat.transports.smallwebrtc.connection import IceServer
        from pipecat.transports.smallwebrtc.request_handler import (
            ConnectionMode,
            SmallWebRTCRequestHandler,
        )

        self.control_socket = control_socket
        self.bot_id = bot_id
        self.session_id = session_id
        self.warmup = warmup
        self.log_level = log_level
        self.idle_timeout = idle_timeout
        self.assigned = asyncio.Event()
        if session_id is not None:
            self.assigned.set()
        self.agent = agent
        self.bot = bot
        self.body = body
        self.handler = SmallWebRTCRequestHandler(
            ice_servers=[IceServer(**s) for s in ice_servers],
            connection_mode=ConnectionMode.SINGLE,
        )
        self.writer: asyncio.StreamWriter | None = None
        self.bot_task: asyncio.Task | None = None
        self.client_left = False
        self.client_left_detail = ""
        self.stop_requested: str | None = None
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.observations: list[tuple[str, dict[str, Any]]] = []  # replayed to a new control plane
        self.reconnect_s = reconnect_s
        self.stream: Any = None  # a RelayedWebSocket once a media WebSocket session opened
        self.emit = emit
        # Models this agent's bot built in its last session, built here before ours (warm bots).
        from voxfleet.runtime.model_preload import ModelPreloader

        self.preload = preload or []
        self.preloader = ModelPreloader(
            lambda entry: self.send("model_load", in_session=self.assigned.is_set(), model=entry))
        self.preloader.install()

    REPLAYED = ("event", "turn", "transcript", "ttfb", "model_load")

    def send(self, kind: str, **fields: Any) -> None:
        if kind in self.REPLAYED:
            self.observations.append((kind, fields))
        if self.emit is not None:
            self.emit(kind, fields)
        elif self.writer is not None and not self.writer.is_closing():
            self.writer.write(wire.encode(kind, **fields))

    async def run(self) -> int:
        """Socket mode: connect to the control plane, serve the session, report how it ended."""
        assert self.control_socket is not None
        reader, self.writer = await asyncio.open_unix_connection(self.control_socket, limit=wire.MAX_LINE)
        self.send("bot_hello", bot_id=self.bot_id, pid=os.getpid(), at=time.time())
        control = asyncio.create_task(self.read_control(reader), name="control")
        try:
            if not self.assigned.is_set():
                await self.prepare_warm()
            code, reason, detail = await self.finish()
        finally:
            control.cancel()
        self.send("ended", reason=reason, detail=detail)
        try:
            await self.writer.drain()
            self.writer.close()
        except (ConnectionError, RuntimeError):
            pass
        return code

    async def prepare_warm(self) -> None:
        started = time.monotonic()
        problems = await self.sync_preload(self.preload) if self.preload else []
        if self.warmup is not None:
            try:
                await self.warmup()
            except Exception as exc:  # noqa: BLE001 - a failed warm-up is reported; the bot exits
                log.error("bot %s: warmup() failed: %s: %s", self.bot_id, type(exc).__name__, exc)
                self.stop("warmup_failed")
                return
        self.send("warm_ready", warmup_ms=round((time.monotonic() - started) * 1000, 1),
                  preloaded=self.preloader.prebuilt_count(), preload_problems=problems)

    async def sync_preload(self, manifest: list[dict[str, Any]]) -> list[str]:
        """Build (off the event loop) the models `manifest` lists that this bot does not hold yet."""
        problems = await asyncio.to_thread(self.preloader.prebuild, manifest)
        for problem in problems:
            log.warning("bot %s: model not pre-loaded: %s", self.bot_id, problem)
        self.send("preloaded", count=self.preloader.prebuilt_count())
        return problems

    async def finish(self) -> tuple[int, str, str]:
        """Wait for the session to end, close its peer connection; (exit code, reason, detail)."""
        try:
            await self.done.wait()
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.handler.close()
        code, reason, detail = self.outcome()
        if self.stream is not None:
            self.send("relay_stats", **self.stream.stats())
            if not self.stream.closed_by_bot and self.stream.closed_by_peer is None:
                self.send("ws_close", code=1000, reason=f"session ended ({reason})")
        return code, reason, detail

    def assign(self, message: dict[str, Any]) -> None:
        self.take_session(message)
        # Answer first: re-labelling the log handlers takes milliseconds the caller need not wait for.
        self.send("assigned", id=message.get("id"), session_id=self.session_id)
        self.relabel_logs()

    def take_session(self, message: dict[str, Any]) -> None:
        from pipecat.transports.smallwebrtc.connection import IceServer

        self.session_id = message["session_id"]
        self.body = message.get("body")
        self.handler.update_ice_servers([IceServer(**s) for s in message.get("ice_servers") or []])
        self.assigned.set()

    def relabel_logs(self) -> None:
        from voxfleet.observability.logs import configure_logging

        configure_logging(self.log_level, process=f"bot:{self.session_id}")

    def outcome(self) -> tuple[int, str, str]:
        if self.bot_task is None or self.bot_task.cancelled():
            return 0, self.stop_requested or "hangup", "bot never ran" if self.bot_task is None else ""
        error = self.bot_task.exception()
        if error is not None:
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            return 1, "bot_error", detail
        if self.stop_requested:
            return 0, self.stop_requested, ""
        return 0, "hangup" if self.client_left else "bot_ended", self.client_left_detail

    async def read_control(self, reader: asyncio.StreamReader) -> None:
        while True:
            await self._read_until_closed(reader)
            if self.done.is_set():
                return
            reader = await self._reconnect()
            if reader is None:
                log.warning("session %s: control plane went away; ending the session", self.session_id)
                self.stop("control_lost")
                return

    async def _reconnect(self) -> asyncio.StreamReader | None:
        """The control plane restarted (or died): media goes on directly, so keep the call and
        offer it to the next control plane on the same socket for `reconnect_s` seconds."""
        if self.session_id is None:
            return None  # a warm bot is simply replaced
        log.warning("session %s: control link lost; trying to resume for %.0fs", self.session_id, self.reconnect_s)
        deadline = time.monotonic() + self.reconnect_s
        while time.monotonic() < deadline and not self.done.is_set():
            await asyncio.sleep(0.5)
            try:
                reader, self.writer = await asyncio.open_unix_connection(self.control_socket, limit=wire.MAX_LINE)
            except OSError:
                continue
            self.writer.write(wire.encode("bot_resume", bot_id=self.bot_id, session_id=self.session_id,
                                          agent=self.agent, pid=os.getpid(), at=time.time()))
            for kind, fields in self.observations:
                self.writer.write(wire.encode(kind, **fields))
            log.info("session %s: resumed with a new control plane", self.session_id)
            return reader
        return None

    async def _read_until_closed(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                message = wire.decode(line)
                kind = message["t"]
                if kind == "assign":
                    self.assign(message)
                elif kind == "preload":  # the agent's bot loads other models now: build them too
                    if not self.assigned.is_set():
                        self.spawn(self.sync_preload(message.get("models") or []))
                elif kind == "offer":
                    self.spawn(self.answer_offer(message))
                elif kind == "ice":
                    self.spawn(self.add_candidates(message))
                elif kind == "ws_in":
                    self.stream_in(message)
                elif kind == "ws_open":
                    self.spawn(self.answer_stream(message))
                elif kind == "ws_close":
                    self.stream_closed(message)
                elif kind == "stop":
                    self.stop(message.get("reason", "hangup"))
        except (ConnectionError, wire.WireError) as exc:
            log.warning("session %s: control link failed: %s", self.session_id, exc)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stop(self, reason: str) -> None:
        self.stop_requested = self.stop_requested or reason
        if self.bot_task is not None and not self.bot_task.done():
            self.bot_task.cancel()
        else:
            self.done.set()

    async def offer(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer a SmallWebRTC offer ({sdp, type, pc_id, restart_pc, request_data}); the first
        one starts the bot. Raises what Pipecat's request handler raises."""
        from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequest

        request = SmallWebRTCRequest(
            sdp=message["sdp"],
            type=message["type"],
            pc_id=message.get("pc_id"),
            restart_pc=message.get("restart_pc"),
            request_data=message.get("request_data"),
        )
        return await self.handler.handle_web_request(request, self.start_bot) or {}

    async def add_ice(self, message: dict[str, Any]) -> None:
        """Add trickled ICE candidates ({pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]})."""
        from pipecat.transports.smallwebrtc.request_handler import IceCandidate, SmallWebRTCPatchRequest

        await self.handler.handle_patch_request(
            SmallWebRTCPatchRequest(
                pc_id=message["pc_id"],
                candidates=[IceCandidate(**c) for c in message.get("candidates", [])],
            )
        )

    async def answer_offer(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        try:
            answer = await self.offer(message)
        except MediaPortsExhausted as exc:
            log.error("session %s: %s", self.session_id, exc)
            self.send("error", id=request_id, message=str(exc), code=exc.code,
                      media_ports=[exc.first, exc.last, exc.host])
            return
        except Exception as exc:  # noqa: BLE001 - reported to the control plane, which maps it
            self.send("error", id=request_id, message=f"{type(exc).__name__}: {exc}")
            return
        self.send("answer", id=request_id, **answer)

    async def add_candidates(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        try:
            await self.add_ice(message)
        except Exception as exc:  # noqa: BLE001
            detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            self.send("error", id=request_id, message=str(detail))
            return
        self.send("ice_ok", id=request_id)

    async def answer_stream(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        try:
            await self.open_stream(message)
        except Exception as exc:  # noqa: BLE001 - reported to the control plane, which maps it
            self.send("error", id=request_id, message=f"{type(exc).__name__}: {exc}")
            return
        self.send("ws_opened", id=request_id)

    async def open_stream(self, message: dict[str, Any]) -> None:
        """A media WebSocket for this session (a phone call's stream, or a generic Pipecat
        WebSocket client): run the bot on it with WebSocketRunnerArguments."""
        from pipecat.runner.types import WebSocketRunnerArguments

        from voxfleet.runtime.ws_relay import RelayedWebSocket

        if self.stream is not None or self.bot_task is not None:
            raise RuntimeError("this session's bot is already connected")
        self.stream = RelayedWebSocket(self.send, message)
        await self.stream.websocket.accept()
        self.observe_websocket_rtvi()
        self.observe_turns()
        runner_args = WebSocketRunnerArguments(
            websocket=self.stream.websocket, body=self.body, session_id=self.session_id,
            transport_type="websocket" if message.get("transport") == "websocket" else None,
        )
        self.bot_task = asyncio.create_task(self.bot(runner_args), name=f"bot:{self.session_id}")
        self.bot_task.add_done_callback(self.bot_finished)
        self.send("event", name="bot_started", at=time.time())

    def stream_in(self, message: dict[str, Any]) -> None:
        """A frame from the caller ({text} or {bytes: base64}, at)."""
        if self.stream is not None:
            self.stream.deliver(message)

    def stream_closed(self, message: dict[str, Any]) -> None:
        """The caller's socket closed ({code, reason})."""
        if self.stream is not None:
            self.client_left = True
            self.client_left_detail = message.get("reason", "")
            self.stream.peer_closed(int(message.get("code", 1000)))

    async def start_bot(self, connection: Any) -> None:
        from pipecat.runner.types import SmallWebRTCRunnerArguments

        @connection.event_handler("closed")
        async def on_closed(_connection: Any) -> None:
            self.client_left = True

        self.observe_rtvi(connection)
        self.observe_turns()

        @connection.event_handler("connected")
        async def on_connected(_connection: Any) -> None:
            self.send("event", name="client_connected", at=time.time())

        runner_args = SmallWebRTCRunnerArguments(
            webrtc_connection=connection, body=self.body, session_id=self.session_id
        )
        self.spawn(self.watch_idle(connection))
        self.bot_task = asyncio.create_task(self.bot(runner_args), name=f"bot:{self.session_id}")
        self.bot_task.add_done_callback(self.bot_finished)
        self.send("event", name="bot_started", at=time.time())

    def observe_rtvi(self, connection: Any) -> None:
        """Report the session's latencies and transcript from the RTVI messages the bot sends its
        client (Pipecat's PipelineWorker emits them by default), without touching the bot: the
        connection's send_app_message is wrapped for this one session.

        first_audio: the first bot-started-speaking; ttfb: each service's time to first byte from
        RTVI metrics; transcript: final user transcriptions and bot output. Turns are timed by
        ``observe_turns`` (RTVI messages carry neither the VAD's stop window nor the stages)."""
        send = connection.send_app_message
        observe = self.rtvi_observer()

        def observed(message: Any) -> Any:
            observe(message)
            return send(message)

        connection.send_app_message = observed

    def observe_websocket_rtvi(self) -> None:
        """The same for a media WebSocket session. Telephony serializers drop RTVI messages (a
        phone cannot show them), so they are read where the transport hands them to its serializer:
        this process hosts one session, so the class of Pipecat's WebSocket output is wrapped here."""
        from pipecat.transports.websocket.fastapi import FastAPIWebsocketOutputTransport

        send_message = FastAPIWebsocketOutputTransport.send_message
        observe = self.rtvi_observer()

        async def observed(transport: Any, frame: Any) -> None:
            observe(getattr(frame, "message", None))
            await send_message(transport, frame)

        FastAPIWebsocketOutputTransport.send_message = observed  # type: ignore[method-assign]

    def observe_turns(self) -> None:
        """Time every user turn of this session (voice-to-voice and its stages, see
        ``observability.turns``) with an observer on each ``PipelineWorker`` the bot creates. The
        bot is unchanged; this process hosts one session, so the class is wrapped here, once."""
        from pipecat.pipeline.worker import PipelineWorker

        from voxfleet.runtime.turn_observer import TurnLatencyObserver

        if getattr(PipelineWorker.__init__, "voxfleet_observed", False):
            return
        init = PipelineWorker.__init__

        def observed_init(worker: Any, *args: Any, **kwargs: Any) -> None:
            init(worker, *args, **kwargs)
            worker.add_observer(TurnLatencyObserver(self.report_turn))

        observed_init.voxfleet_observed = True  # type: ignore[attr-defined]
        PipelineWorker.__init__ = observed_init  # type: ignore[method-assign]

    def report_turn(self, turn: Any) -> None:
        self.send("turn", v2v_ms=turn.v2v_ms, stages_ms=turn.stages_ms, speech_end=turn.speech_end,
                  at=time.time())
        log.info("session %s: turn voice-to-voice %.0f ms (%s)", self.session_id, turn.v2v_ms,
                 ", ".join(f"{k} {v:.0f}" for k, v in turn.stages_ms.items()))

    def rtvi_observer(self) -> Callable[[Any], None]:
        state: dict[str, Any] = {"first_audio": False, "last_bot_text": None}

        def observe(message: Any) -> None:
            try:
                self.on_rtvi(message, state)
            except Exception as exc:  # noqa: BLE001 - observing must never break the call
                log.debug("session %s: RTVI observation failed: %s", self.session_id, exc)

        return observe

    def on_rtvi(self, message: Any, state: dict[str, Any]) -> None:
        if not isinstance(message, dict) or message.get("label") != "rtvi-ai":
            return
        kind, data, now = message.get("type"), message.get("data") or {}, time.time()
        if kind == "bot-started-speaking":
            if not state["first_audio"]:
                state["first_audio"] = True
                self.send("event", name="first_audio", at=now)
        elif kind == "user-transcription" and data.get("final") and data.get("text", "").strip():
            self.send("transcript", role="user", text=data["text"].strip(), at=now)
        elif kind == "bot-output" and data.get("aggregated_by") != "word" and data.get("text", "").strip():
            text = data["text"].strip()
            if text != state["last_bot_text"]:
                state["last_bot_text"] = text
                self.send("transcript", role="bot", text=text, at=now)
        elif kind == "metrics":
            for item in data.get("ttfb") or []:
                if isinstance(item, dict) and "value" in item:
                    self.send("ttfb", processor=str(item.get("processor", "?")), seconds=float(item["value"]))

    async def watch_idle(self, connection: Any) -> None:
        """End the session when no packet at all (media, RTCP, data) arrived for `idle_timeout`:
        the caller vanished without hanging up."""
        last_count, last_change = -1, time.monotonic()
        while not self.done.is_set():
            await asyncio.sleep(min(5.0, self.idle_timeout / 4))
            try:
                report = await connection.pc.getStats()
            except Exception:  # noqa: BLE001 - the connection is closing
                return
            count = sum(getattr(s, "packetsReceived", 0) or 0 for s in report.values() if s.type == "transport")
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change >= self.idle_timeout:
                log.warning("session %s: no media for %.0fs; ending", self.session_id, now - last_change)
                self.stop("idle_timeout")
                return

    def bot_finished(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("session %s: bot raised %s: %s", self.session_id, type(error).__name__, error)
        self.done.set()


def run_bot_host(
    *,
    control_socket: str,
    bot_id: str,
    session_id: str | None,
    agent: str,
    bot: BotFunction,
    warmup: Callable[[], Awaitable[Any]] | None,
    body: Any,
    ice_servers: list[dict[str, Any]],
    advertised_addresses: list[str],
    log_level: str,
    idle_timeout: float = 60.0,
    reconnect_s: float = 15.0,
    media_ports: tuple[int, int] | None = None,
    preload: list[dict[str, Any]] | None = None,
) -> int:
    """Entry point in a freshly forked child; returns the process exit code."""
    from voxfleet.observability.logs import configure_logging
    from voxfleet.transports.ice import advertise_addresses
    from voxfleet.transports.media_ports import loop_factory

    configure_logging(log_level, process=f"bot:{session_id or 'warm-' + bot_id[:8]}")
    advertise_addresses(advertised_addresses)
    host = BotHost(
        control_socket=control_socket,
        bot_id=bot_id,
        session_id=session_id,
        agent=agent,
        bot=bot,
        warmup=warmup,
        body=body,
        ice_servers=ice_servers,
        log_level=log_level,
        idle_timeout=idle_timeout,
        reconnect_s=reconnect_s,
        preload=preload,
    )
    with asyncio.Runner(loop_factory=loop_factory(media_ports)) as runner:
        return runner.run(host.run())
