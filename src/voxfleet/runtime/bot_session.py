"""The bot side's session logic: ONE session of one bot process, whoever drives it.

A bot starts either with its session (cold start) or without one (a warm bot): then it runs
the bot module's optional ``async def warmup()`` (session-independent set-up that must happen
after the fork), reports ``WarmReady`` and waits to be assigned a session. It answers the
session's WebRTC signaling with Pipecat's own ``SmallWebRTCRequestHandler`` (media then flows
client <-> this process directly), or takes a media WebSocket relayed by the control plane, runs
the user's unchanged ``bot(runner_args)``, and tells how the session ended (``finish``).

:class:`BotSession` does no I/O with the control plane: requests come in as messages
(``runtime.messages``), replies go back as return values and observations through ``emit``.
Two thin drivers move them: the control socket (``bot_host``, the local backend's forked bots)
and Ray actor calls (``ray.actor``).

The session's ICE servers (TURN credentials minted for this session) arrive with the session,
and the bot's peer connection uses them.
"""

from __future__ import annotations

import asyncio
import os
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from voxfleet.end_reasons import FAILED_REASONS, failure_text
from voxfleet.exceptions import MediaPortsExhausted
from voxfleet.procutil import can_renice_back, set_threads_nice
from voxfleet.runtime.messages import (
    Answer,
    Assign,
    Assigned,
    BotSpec,
    Error,
    Event,
    Ice,
    IceOk,
    Message,
    ModelLoad,
    Offer,
    Preloaded,
    RelayStats,
    SessionStart,
    Turn,
    WarmReady,
    WsClose,
    WsIn,
    WsOpen,
    WsOpened,
)
from voxfleet.runtime.rtvi import RtviObserver, fatal_error

log = logging.getLogger(__name__)

BotFunction = Callable[[Any], Coroutine[Any, Any, Any]]
Emit = Callable[[Message], None]


class BotSession:
    def __init__(
        self,
        *,
        spec: BotSpec,
        bot_id: str,
        start: SessionStart | None,
        bot: BotFunction,
        warmup: Callable[[], Awaitable[Any]] | None,
        emit: Emit,
        preload: list[dict[str, Any]] | None = None,
    ) -> None:
        from pipecat.transports.smallwebrtc.connection import IceServer
        from pipecat.transports.smallwebrtc.request_handler import (
            ConnectionMode,
            SmallWebRTCRequestHandler,
        )

        from voxfleet.runtime.model_preload import ModelPreloader

        self.spec = spec
        self.bot_id = bot_id
        self.session_id = start.session_id if start else None
        self.body = start.body if start else None
        self.bot = bot
        self.warmup = warmup
        self.emit = emit
        self.assigned = asyncio.Event()
        if start is not None:
            self.assigned.set()
        self.handler = SmallWebRTCRequestHandler(
            ice_servers=[IceServer(**s) for s in (start.ice_servers if start else [])],
            connection_mode=ConnectionMode.SINGLE,
        )
        self.bot_task: asyncio.Task | None = None
        self.client_left = False
        self.client_left_detail = ""
        self.stop_requested: str | None = None
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.stream: Any = None  # a RelayedWebSocket once a media WebSocket session opened
        self.connection: Any = None  # its SmallWebRTCConnection once an offer started the bot
        # Models this agent's bot built in its last session, built here before ours (warm bots).
        self.preload = preload or []
        self.preloader = ModelPreloader(
            lambda entry: self.emit(ModelLoad(model=entry, in_session=self.assigned.is_set())),
            in_session=self.assigned.is_set)
        self.preloader.install()
        self.niced = False
        self.recording: Any = None  # a SessionRecording while this session is recorded

    # -- a warm bot ---------------------------------------------------------------------------
    async def prepare_warm(self) -> None:
        started = time.monotonic()
        if self.spec.warm_nice and can_renice_back(self.spec.warm_nice):
            set_threads_nice(self.spec.warm_nice)
            self.niced = True
        problems = await self.sync_preload(self.preload) if self.preload else []
        if self.warmup is not None:
            try:
                await self.warmup()
            except Exception as exc:  # noqa: BLE001 - a failed warm-up is reported; the bot exits
                log.error("bot %s: warmup() failed: %s: %s", self.bot_id, type(exc).__name__, exc)
                self.stop("warmup_failed")
                return
        self.emit(WarmReady(warmup_ms=round((time.monotonic() - started) * 1000, 1),
                            preloaded=self.preloader.prebuilt_count(), preload_problems=problems))

    async def sync_preload(self, manifest: list[dict[str, Any]]) -> list[str]:
        """Build (off the event loop) the models `manifest` lists that this bot does not hold yet."""
        problems = await asyncio.to_thread(self.preloader.prebuild, manifest)
        for problem in problems:
            log.warning("bot %s: model not pre-loaded: %s", self.bot_id, problem)
        self.emit(Preloaded(count=self.preloader.prebuilt_count()))
        return problems

    def preload_more(self, models: list[dict[str, Any]]) -> None:
        """The agent's bot loads other models now: a warm bot builds them too."""
        if not self.assigned.is_set():
            self.spawn(self.sync_preload(models))

    def assign(self, request: Assign) -> Assigned:
        self.take_session(request.start)
        return Assigned(id=request.id, session_id=request.start.session_id)

    def take_session(self, start: SessionStart) -> None:
        from pipecat.transports.smallwebrtc.connection import IceServer

        self.session_id = start.session_id
        self.body = start.body
        self.handler.update_ice_servers([IceServer(**s) for s in start.ice_servers])
        if self.niced:
            set_threads_nice(0)
            self.niced = False
        self.assigned.set()

    def relabel_logs(self) -> None:
        from voxfleet.observability.logs import configure_logging

        configure_logging(self.spec.log_level, process=f"bot:{self.session_id}")

    # -- the session's end --------------------------------------------------------------------
    async def finish(self) -> tuple[int, str, str]:
        """Wait for the session to end, close its peer connection; (exit code, reason, detail)."""
        try:
            await self.done.wait()
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.tell_client_if_failed()
            await self.handler.close()
            if self.recording is not None:
                self.recording.close()  # the control plane turns it into a WAV
        code, reason, detail = self.outcome()
        if self.stream is not None:
            self.emit(RelayStats(**self.stream.stats()))
            if not self.stream.closed_by_bot and self.stream.closed_by_peer is None:
                # 1011: the control plane tells the caller (an RTVI error, or the phone message)
                failed = reason in FAILED_REASONS
                self.emit(WsClose(code=1011 if failed else 1000,
                                  reason=failure_text(reason) if failed else f"session ended ({reason})"))
        return code, reason, detail

    async def tell_client_if_failed(self) -> None:
        """A WebRTC client whose session failed (the bot raised, or was stopped over its memory
        limit) gets a fatal RTVI error on its data channel before the connection closes, not
        silence. (A relayed media stream is told by the control plane; see finish.)"""
        _, reason, _ = self.outcome()
        if reason not in FAILED_REASONS or self.connection is None or self.stream is not None:
            return
        try:
            self.connection.send_app_message(fatal_error(failure_text(reason)))
            await asyncio.sleep(0.1)  # the data channel sends in the background; then the close
        except Exception as exc:  # noqa: BLE001 - the connection may be closing already
            log.info("session %s: could not send the RTVI error: %s", self.session_id, exc)

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

    def stop(self, reason: str) -> None:
        self.stop_requested = self.stop_requested or reason
        if self.bot_task is not None and not self.bot_task.done():
            self.bot_task.cancel()
        else:
            self.done.set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def bot_finished(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("session %s: bot raised %s: %s", self.session_id, type(error).__name__, error)
        self.done.set()

    # -- requests of the control plane: each answered with its reply ---------------------------
    async def answer_offer(self, request: Offer) -> Answer | Error:
        """Answer a SmallWebRTC offer; the first one starts the bot."""
        from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequest

        try:
            answer = await self.handler.handle_web_request(
                SmallWebRTCRequest(sdp=request.sdp, type=request.type, pc_id=request.pc_id,
                                   restart_pc=request.restart_pc, request_data=request.request_data),
                self.start_bot,
            ) or {}
        except MediaPortsExhausted as exc:
            log.error("session %s: %s", self.session_id, exc)
            return Error(id=request.id, message=str(exc), code=exc.code, media_ports=[exc.first, exc.last, exc.host])
        except Exception as exc:  # noqa: BLE001 - reported to the control plane, which maps it
            return Error(id=request.id, message=f"{type(exc).__name__}: {exc}")
        return Answer(id=request.id, sdp=answer.get("sdp"), type=answer.get("type"), pc_id=answer.get("pc_id"))

    async def add_candidates(self, request: Ice) -> IceOk | Error:
        """Add trickled ICE candidates ({candidate, sdp_mid, sdp_mline_index})."""
        from pipecat.transports.smallwebrtc.request_handler import IceCandidate, SmallWebRTCPatchRequest

        try:
            await self.handler.handle_patch_request(SmallWebRTCPatchRequest(
                pc_id=request.pc_id, candidates=[IceCandidate(**c) for c in request.candidates]))
        except Exception as exc:  # noqa: BLE001
            detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            return Error(id=request.id, message=str(detail))
        return IceOk(id=request.id)

    async def answer_stream(self, request: WsOpen) -> WsOpened | Error:
        try:
            await self.open_stream(request)
        except Exception as exc:  # noqa: BLE001 - reported to the control plane, which maps it
            return Error(id=request.id, message=f"{type(exc).__name__}: {exc}")
        return WsOpened(id=request.id)

    # -- the media -------------------------------------------------------------------------
    async def open_stream(self, request: WsOpen) -> None:
        """A media WebSocket for this session (a phone call's stream, or a generic Pipecat
        WebSocket client): run the bot on it with WebSocketRunnerArguments."""
        from pipecat.runner.types import WebSocketRunnerArguments

        from voxfleet.runtime.ws_relay import RelayedWebSocket

        if self.stream is not None or self.bot_task is not None:
            raise RuntimeError("this session's bot is already connected")
        if request.transport == "twilio":
            self.twilio_account_from_call()
        self.stream = RelayedWebSocket(self.emit, request)
        await self.stream.websocket.accept()
        self.observe_websocket_rtvi()
        self.observe_turns()
        self.record_audio()
        runner_args = WebSocketRunnerArguments(
            websocket=self.stream.websocket, body=self.body, session_id=self.session_id,
            transport_type="websocket" if request.transport == "websocket" else None,
        )
        self.bot_task = asyncio.create_task(self.bot(runner_args), name=f"bot:{self.session_id}")
        self.bot_task.add_done_callback(self.bot_finished)
        self.emit(Event(name="bot_started", at=time.time()))

    def twilio_account_from_call(self) -> None:
        """An auth token alone is a valid Twilio setup for inbound calls, but Pipecat's Twilio
        serializer (hang-up on EndFrame) also wants the account SID: take it from the call's own
        webhook, whose signature that token verified. This process hosts this one call only."""
        call = self.body.get("call") if isinstance(self.body, dict) else None
        account = call.get("AccountSid") if isinstance(call, dict) else None
        if os.environ.get("TWILIO_AUTH_TOKEN") and not os.environ.get("TWILIO_ACCOUNT_SID") and account:
            os.environ["TWILIO_ACCOUNT_SID"] = str(account)

    def stream_in(self, message: WsIn) -> None:
        """A frame from the caller."""
        if self.stream is not None:
            self.stream.deliver(message)

    def stream_closed(self, message: WsClose) -> None:
        """The caller's socket closed."""
        if self.stream is not None:
            self.client_left = True
            self.client_left_detail = message.reason
            self.stream.peer_closed(message.code)

    async def start_bot(self, connection: Any) -> None:
        from pipecat.runner.types import SmallWebRTCRunnerArguments

        self.connection = connection
        @connection.event_handler("closed")
        async def on_closed(_connection: Any) -> None:
            self.client_left = True

        self.observe_rtvi(connection)
        self.observe_turns()
        self.record_audio()
        shorten_audio_jitter_buffer(connection.pc)

        @connection.event_handler("connected")
        async def on_connected(_connection: Any) -> None:
            self.emit(Event(name="client_connected", at=time.time()))

        runner_args = SmallWebRTCRunnerArguments(
            webrtc_connection=connection, body=self.body, session_id=self.session_id
        )
        self.spawn(self.watch_idle(connection))
        self.bot_task = asyncio.create_task(self.bot(runner_args), name=f"bot:{self.session_id}")
        self.bot_task.add_done_callback(self.bot_finished)
        self.emit(Event(name="bot_started", at=time.time()))

    # -- observing the bot without touching it --------------------------------------------------
    def observe_rtvi(self, connection: Any) -> None:
        """Report what the RTVI messages the bot sends its client tell (``rtvi``): the
        connection's send_app_message is wrapped for this one session."""
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

        FastAPIWebsocketOutputTransport.send_message = observed  # type: ignore[method-assign,assignment]

    def observe_turns(self) -> None:
        """Time every user turn of this session (voice-to-voice and its stages, see
        ``observability.turns``) with an observer on each ``PipelineWorker`` the bot creates. The
        bot is unchanged; this process hosts one session."""
        from voxfleet.runtime.turn_observer import observe_every_worker

        observe_every_worker(self.report_turn)

    def record_audio(self) -> None:
        """When the agent records: the caller's and the bot's audio of this session into its
        recording file (``runtime/recording_observer.py``), for every transport alike."""
        if not self.spec.recordings_dir or self.recording is not None or self.session_id is None:
            return
        from pathlib import Path

        from voxfleet.runtime.recording_observer import RecordingObserver, SessionRecording
        from voxfleet.runtime.turn_observer import add_to_every_worker

        try:
            self.recording = SessionRecording(Path(self.spec.recordings_dir), self.session_id)
        except OSError as exc:  # an unwritable directory loses the recording, never the call
            log.error("session %s: not recorded: %s", self.session_id, exc)
            return
        recording = self.recording
        add_to_every_worker("recording", lambda: RecordingObserver(recording))

    def report_turn(self, turn: Any) -> None:
        self.emit(Turn(v2v_ms=turn.v2v_ms, stages_ms=turn.stages_ms, speech_end=turn.speech_end, at=time.time()))
        log.info("session %s: turn voice-to-voice %.0f ms (%s)", self.session_id, turn.v2v_ms,
                 ", ".join(f"{k} {v:.0f}" for k, v in turn.stages_ms.items()))

    def rtvi_observer(self) -> Callable[[Any], None]:
        parser = RtviObserver()

        def observe(message: Any) -> None:
            try:
                for observation in parser.observe(message, time.time()):
                    self.emit(observation)
            except Exception as exc:  # noqa: BLE001 - observing must never break the call
                log.debug("session %s: RTVI observation failed: %s", self.session_id, exc)

        return observe

    async def watch_idle(self, connection: Any) -> None:
        """End the session when no packet at all (media, RTCP, data) arrived for `idle_timeout_s`:
        the caller vanished without hanging up."""
        idle_timeout = self.spec.idle_timeout_s
        last_count, last_change = -1, time.monotonic()
        while not self.done.is_set():
            await asyncio.sleep(min(5.0, idle_timeout / 4))
            try:
                report = await connection.pc.getStats()
            except Exception:  # noqa: BLE001 - the connection is closing
                return
            count = sum(getattr(s, "packetsReceived", 0) or 0 for s in report.values() if s.type == "transport")
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change >= idle_timeout:
                log.warning("session %s: no media for %.0fs; ending", self.session_id, now - last_change)
                self.stop("idle_timeout")
                return


# Frames the bot's WebRTC audio receiver holds back before it releases the oldest. aiortc holds 4
# (a jitter buffer sized for playout: 80 ms); the bot plays nothing it receives, it feeds a VAD
# and an STT, which lose nothing to a frame arriving late, so it releases each frame as soon as
# the next one arrives: the caller's end of speech reaches the bot ~60 ms sooner.
BOT_AUDIO_PREFETCH = 1


def shorten_audio_jitter_buffer(pc: Any, prefetch: int = BOT_AUDIO_PREFETCH) -> bool:
    """Give `pc`'s audio receivers a jitter buffer of `prefetch` frames (see BOT_AUDIO_PREFETCH);
    False (and the connection unchanged) if this aiortc keeps its buffer elsewhere."""
    from aiortc.jitterbuffer import JitterBuffer

    changed = False
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        attribute = "_RTCRtpReceiver__jitter_buffer"  # set in RTCRtpReceiver.__init__, read per packet
        current = getattr(receiver, attribute, None)
        if transceiver.kind != "audio" or not isinstance(current, JitterBuffer):
            continue
        setattr(receiver, attribute, JitterBuffer(capacity=current.capacity, prefetch=prefetch))
        changed = True
    if not changed:
        log.warning("WebRTC audio receiver: no aiortc jitter buffer found; it keeps its default")
    return changed

