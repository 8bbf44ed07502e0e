"""The control plane's end of a relayed media WebSocket (see ``ws_relay`` for the bot's end).

A backend's bot handle owns at most one :class:`RelayStream`: frames from the caller go to the
bot with ``send``; what the bot sends comes out of ``receive`` until a :class:`StreamClosed`.
Outbound frames carry the bot's ``time.monotonic()``, so the relay's added latency per frame is
measured here (``outbound_ms``); the bot measures the inbound direction and reports it at the end.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxfleet.end_reasons import FAILED_REASONS, failure_text
from voxfleet.runtime.messages import Message, RelayStats, WsClose, WsIn, WsOut

if TYPE_CHECKING:
    from voxfleet.runtime.protocol import BotExit

Write = Callable[[Message], None]  # one message to the bot


@functools.cache
def clock_id() -> str:
    """Which monotonic clock this process reads: the kernel's boot id. Relay latency is measured
    only between processes that share it (a bot on another node of a cluster does not)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class StreamClosed:
    code: int
    reason: str

    @property
    def failed(self) -> bool:
        """The bot failed the caller (1011, RFC 6455's "unexpected condition"): the control
        plane tells the caller so instead of just closing."""
        return self.code == BOT_FAILED


BOT_FAILED = 1011
CALLER_TOO_SLOW = 1008  # policy violation: the caller does not read what it is sent
MAX_OUTBOX = 1500  # frames waiting for the caller's socket: 30 s of 20 ms audio


class RelayStream:
    def __init__(self, write: Write) -> None:
        self._write = write
        self._outbox: asyncio.Queue[str | bytes | StreamClosed] = asyncio.Queue()
        self.closed: StreamClosed | None = None
        self.outbound_ms = LatencySamples()
        self.inbound_stats: dict[str, Any] = {}

    # -- caller -> bot ----------------------------------------------------------------------
    def send(self, frame: str | bytes) -> None:
        if self.closed is not None:
            return
        if isinstance(frame, bytes):
            self._write(WsIn(bytes=base64.b64encode(frame).decode(), at=time.monotonic()))
        else:
            self._write(WsIn(text=frame, at=time.monotonic()))

    def close(self, code: int = 1000, reason: str = "caller closed the stream") -> None:
        """The caller hung up (or we closed the caller's socket): tell the bot."""
        if self.closed is None:
            self._write(WsClose(code=code, reason=reason))
            self._finish(StreamClosed(code, reason))

    # -- bot -> caller ----------------------------------------------------------------------
    async def receive(self) -> str | bytes | StreamClosed:
        return await self._outbox.get()

    def on_bot_message(self, message: WsOut | WsClose | RelayStats) -> None:
        if isinstance(message, WsOut):
            if message.at is not None:
                self.outbound_ms.add((time.monotonic() - message.at) * 1000)
            frame = base64.b64decode(message.bytes) if message.bytes is not None else (message.text or "")
            if self.closed is not None:
                return
            if self._outbox.qsize() >= MAX_OUTBOX:
                self._caller_too_slow()
                return
            self._outbox.put_nowait(frame)
        elif isinstance(message, WsClose):
            self._finish(StreamClosed(message.code, message.reason or "the bot ended the call"))
        else:
            self.inbound_stats = message.summary()

    def on_bot_gone(self, result: BotExit | None = None) -> None:
        """The bot's process is gone; `result`: how it ended (a crash fails the caller)."""
        if result is not None and result.reason in FAILED_REASONS:
            self._finish(StreamClosed(BOT_FAILED, failure_text(result.reason)))
        else:
            self._finish(StreamClosed(1000, "session ended"))

    def _caller_too_slow(self) -> None:
        """The caller's socket takes frames slower than the bot sends them (memory would grow
        for as long as the call lasts): drop what waits, end the call on both sides."""
        while not self._outbox.empty():
            self._outbox.get_nowait()
        reason = f"the caller did not read the bot's frames ({MAX_OUTBOX} waiting)"
        self._write(WsClose(code=CALLER_TOO_SLOW, reason=reason))
        self._finish(StreamClosed(CALLER_TOO_SLOW, reason))

    def _finish(self, closed: StreamClosed) -> None:
        if self.closed is None:
            self.closed = closed
            self._outbox.put_nowait(closed)

    def stats(self) -> dict[str, Any]:
        """Relay latency per frame, ms: inbound (caller -> bot) and outbound (bot -> caller)."""
        return {"inbound": dict(self.inbound_stats), "outbound": self.outbound_ms.summary()}


class LatencySamples:
    """Per-frame latencies of one stream in bounded memory: every frame is counted, and a uniform
    random sample of at most `keep` of them (reservoir sampling) gives the percentiles, so an
    hour-long call (180,000 frames) costs no more than a short one."""

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self.frames = 0
        self.samples: list[float] = []

    def add(self, ms: float) -> None:
        self.frames += 1
        if len(self.samples) < self.keep:
            self.samples.append(ms)
        elif (slot := random.randrange(self.frames)) < self.keep:
            self.samples[slot] = ms

    def summary(self) -> dict[str, Any]:
        samples = sorted(self.samples)
        if not samples:
            return {"frames": 0}
        pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 3)  # noqa: E731
        return {"frames": self.frames, "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99)}
