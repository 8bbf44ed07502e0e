"""Relaying a caller's media WebSocket to its session's bot.

The control plane keeps the caller's socket (so TLS, proxies and the single public port keep
working, and the bot may run on another node) and moves frames both ways through the bot's
``RelayStream``. Every inbound frame is checked at this edge first (for a phone call, against
Twilio's documented protocol); a bad frame closes that one socket with a reason and ends that
one session, nothing else. For phone calls the relay also measures time to first word: the
stream's ``start`` event -> the first outbound ``media`` frame with non-silent audio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxfleet.control.errors import ws_close_for
from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import StreamProtocolError, StreamRejected
from voxfleet.runtime.rtvi import fatal_error
from voxfleet.runtime.streams import BOT_FAILED, RelayStream, StreamClosed
from voxfleet.transports.twilio_media import frame_rate

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 512 * 1024  # a relayed frame, base64-encoded, must fit the control link's line limit


@dataclass
class RelayEnd:
    """Why a relay ended: who ended the call and how the session should record it."""

    reason: EndReason  # hangup (caller), bot_ended, bot_error, protocol_error, idle_timeout
    detail: str
    by_bot: bool = False
    failed: bool = False  # the bot failed the caller (crashed, raised, over its memory limit)


class FrameCheck(Protocol):
    """A media stream's protocol at the edge: one per carrier (``transports/<carrier>_media``),
    and the generic Pipecat client."""

    phone: bool  # a carrier's call: TTFW measured, its caller told by the carrier when the bot fails

    def check(self, frame: str | bytes, now: float | None = None) -> dict[str, Any] | None:
        """The parsed inbound frame, or StreamProtocolError naming the field and value."""

    def outbound_speech(self, frame: str | bytes) -> bool:
        """Whether a frame the bot sends carries audible audio (its first one is the TTFW)."""


class StartCheck(FrameCheck, Protocol):
    """A carrier's stream check: it holds the stream's ``start`` once it has seen it."""

    started: dict[str, Any] | None


HANDSHAKE_TIMEOUT_S = 10.0


async def read_start(websocket: WebSocket, check: StartCheck, connected: str = "") -> tuple[str, str]:
    """A carrier stream's opening: its frames, each checked, up to and including ``start``, each
    within HANDSHAKE_TIMEOUT_S. Returns its ``connected`` frame (or `connected` when the stream
    opened with ``start``: Pipecat's parsers of carriers that send one read two messages; Plivo
    sends none) and its ``start`` frame."""
    frames: list[str] = []
    while check.started is None:
        try:
            frame = await receive_frame(websocket, HANDSHAKE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise StreamProtocolError("start", None, f"no start event within {HANDSHAKE_TIMEOUT_S:.0f}s") from None
        if frame is None:
            raise StreamProtocolError("start", None, "the socket closed before the start event")
        check.check(frame)  # a frame that is not the protocol's opening is refused here
        frames.append(frame)  # type: ignore[arg-type]  # check() refuses binary frames
    return (frames[0] if len(frames) == 2 else connected), frames[-1]


class GenericFrameCheck:
    """Frames of a generic Pipecat WebSocket client (protobuf or JSON): bounded in size and rate."""

    phone = False

    def __init__(self) -> None:
        self.rate = frame_rate()
        self.frames = 0

    def check(self, frame: str | bytes, now: float | None = None) -> None:
        self.frames += 1
        size = len(frame)
        if size > MAX_FRAME_BYTES:
            raise StreamProtocolError("frame", f"{size} bytes", f"over the {MAX_FRAME_BYTES}-byte limit")
        if now is not None and self.rate.take(now) is not None:
            raise StreamProtocolError("frame", f"#{self.frames}", f"over {self.rate.per_s:.0f} frames/s")
        return None

    def outbound_speech(self, frame: str | bytes) -> bool:
        return False


async def receive_frame(websocket: WebSocket, timeout: float) -> str | bytes | None:
    """The next frame from the caller; None when the caller closed the socket."""
    message = await asyncio.wait_for(websocket.receive(), timeout)
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("bytes") is not None:
        return message["bytes"]
    return message.get("text") or ""


async def close_caller(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.CONNECTED and websocket.client_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code, reason[:120])  # a close reason is at most 123 bytes
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass


async def reject(websocket: WebSocket, exc: StreamRejected) -> None:
    """Close the caller's socket with the code and reason for `exc` (accepting it first, so the
    reason reaches the client instead of a bare HTTP 403)."""
    log.warning("media stream refused: %s", exc)
    if websocket.application_state == WebSocketState.CONNECTING:
        await websocket.accept()
    code, reason = ws_close_for(exc)
    await close_caller(websocket, code, reason)


async def relay(
    websocket: WebSocket,
    stream: RelayStream,
    check: FrameCheck,
    *,
    idle_timeout: float,
    on_first_audio: Callable[[float], None] | None = None,
    rtvi: bool = False,
) -> RelayEnd:
    """Move frames both ways until the caller or the bot ends the call. A bot that fails the
    caller closes the socket with 1011 and the reason; `rtvi`: a Pipecat client, told first
    with a fatal RTVI error (a phone call is told by its carrier: see ``telephony``)."""
    to_bot = asyncio.create_task(_caller_to_bot(websocket, stream, check, idle_timeout), name="relay-in")
    to_caller = asyncio.create_task(_bot_to_caller(websocket, stream, check, on_first_audio, rtvi),
                                    name="relay-out")
    done, pending = await asyncio.wait((to_bot, to_caller), return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if to_bot in done and not to_bot.result().by_bot:
        # the caller ended it (stop, close, a bad frame, idle), even if the bot's side, closed by
        # that, also finished before this woke up: not the bot ending the call (no REST hang-up)
        end: RelayEnd = to_bot.result()
    else:
        end = to_caller.result() if to_caller in done else to_bot.result()
    if end.by_bot:
        await close_caller(websocket, BOT_FAILED if end.failed else 1000, end.detail)
    return end


async def _caller_to_bot(websocket: WebSocket, stream: RelayStream, check: FrameCheck,
                         idle_timeout: float) -> RelayEnd:
    while True:
        if stream.closed is not None:
            # the bot's side ended (relay-out has the reason). Checked here too: a cancel that
            # lands as a frame arrives is swallowed by wait_for, and callers send every 20 ms.
            return RelayEnd(EndReason.BOT_ENDED, stream.closed.reason, by_bot=True, failed=stream.closed.failed)
        try:
            frame = await receive_frame(websocket, idle_timeout)
        except asyncio.TimeoutError:  # the session is then stopped with this reason (run_stream)
            await close_caller(websocket, 1001, f"no frame for {idle_timeout:.0f}s")
            return RelayEnd(EndReason.IDLE_TIMEOUT, f"no frame from the caller for {idle_timeout:.0f}s")
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            stream.close(1006, f"caller's socket failed: {exc}")
            return RelayEnd(EndReason.HANGUP, f"caller's socket failed: {exc}")
        if frame is None:
            stream.close(1000, "caller closed the stream")
            return RelayEnd(EndReason.HANGUP, "caller closed the stream")
        try:
            message = check.check(frame, time.monotonic())
        except StreamProtocolError as exc:
            code, reason = ws_close_for(exc)
            await close_caller(websocket, code, reason)
            return RelayEnd(EndReason.PROTOCOL_ERROR, str(exc))
        stream.send(frame)
        if message is not None and message.get("event") == "stop":
            stream.close(1000, "caller sent stop")
            await close_caller(websocket, 1000, "stream stopped")
            return RelayEnd(EndReason.HANGUP, "caller sent stop")


async def _bot_to_caller(websocket: WebSocket, stream: RelayStream, check: FrameCheck,
                         on_first_audio: Callable[[float], None] | None, rtvi: bool) -> RelayEnd:
    binary = True  # how the bot's serializer frames messages (Pipecat's protobuf: binary)
    while True:
        frame = await stream.receive()
        if isinstance(frame, StreamClosed):
            if frame.failed and rtvi:
                await _send_quietly(websocket, rtvi_frame(fatal_error(frame.reason), binary))
            return RelayEnd(EndReason.BOT_ERROR if frame.failed else EndReason.BOT_ENDED, frame.reason,
                            by_bot=True, failed=frame.failed)
        binary = isinstance(frame, bytes)
        if on_first_audio is not None and check.outbound_speech(frame):
            on_first_audio(time.time())
            on_first_audio = None
        try:
            if isinstance(frame, bytes):
                await websocket.send_bytes(frame)
            else:
                await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            stream.close(1006, f"caller's socket failed: {exc}")
            return RelayEnd(EndReason.HANGUP, f"caller's socket failed: {exc}")


def rtvi_frame(message: dict, binary: bool) -> str | bytes:
    """An RTVI message as a Pipecat WebSocket client reads it: a protobuf ``MessageFrame`` (what
    Pipecat's ProtobufFrameSerializer sends), or JSON text for a text serializer."""
    if not binary:
        return json.dumps(message)
    from pipecat.frames.protobufs import frames_pb2  # protobuf only; loaded the first time a bot fails

    return frames_pb2.Frame(message=frames_pb2.MessageFrame(data=json.dumps(message))).SerializeToString()


async def _send_quietly(websocket: WebSocket, frame: str | bytes) -> None:
    try:
        if isinstance(frame, bytes):
            await websocket.send_bytes(frame)
        else:
            await websocket.send_text(frame)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


def without_token(start_frame: str) -> str:
    """The start message as the bot sees it: the single-use token stays at the edge."""
    message = json.loads(start_frame)
    message.get("start", {}).get("customParameters", {}).pop("token", None)
    return json.dumps(message)
