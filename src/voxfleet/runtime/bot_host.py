"""The bot process of the local backend: a forked child that hosts ONE session, then exits.

This is the control-socket driver of ``bot_session.BotSession``: it connects back to the control
plane's UNIX socket, says hello, turns each line it reads into a call on the session and writes
the session's replies and observations back (``runtime.messages``). It reports how the session
ended before it exits. Exit code: 0 when the bot returned, 1 when it raised.

When the control plane restarts (or dies) during a call, media goes on directly, so the bot
keeps the call and offers it to the next control plane on the same socket for
``BotSpec.reconnect_s`` seconds, replaying what it observed so far. With ``media_ports`` set,
the process runs its event loop from ``transports.media_ports``, so every UDP socket it opens
for media is in that range.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from voxfleet.runtime import wire
from voxfleet.runtime.bot_session import BotFunction, BotSession
from voxfleet.runtime.messages import (
    Assign,
    BotHello,
    BotResume,
    BotSpec,
    Ended,
    Event,
    Heartbeat,
    Ice,
    Message,
    ModelLoad,
    Offer,
    Preload,
    SessionStart,
    Stop,
    Transcript,
    Ttfb,
    Turn,
    WsClose,
    WsIn,
    WsOpen,
    decode,
    encode,
)

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0  # well inside liveness.unresponsive_s
LINGER_S = 2.0  # after Ended, how long to wait for the control plane to close the link
REPLAYED = (Event, Turn, Transcript, Ttfb, ModelLoad)  # offered again to a new control plane


class BotHost:
    """A forked bot's session, driven over the control socket."""

    def __init__(self, *, control_socket: str, spec: BotSpec, bot_id: str, start: SessionStart | None,
                 bot: BotFunction, warmup: Callable[[], Awaitable[Any]] | None,
                 preload: list[dict[str, Any]] | None = None) -> None:
        self.control_socket = control_socket
        self.spec = spec
        self.bot_id = bot_id
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None  # the current control link's
        self.observations: list[Message] = []
        self.session = BotSession(spec=spec, bot_id=bot_id, start=start, bot=bot, warmup=warmup,
                                  emit=self.send, preload=preload)

    def send(self, message: Message) -> None:
        if isinstance(message, REPLAYED):
            self.observations.append(message)
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode(message))

    async def run(self) -> int:
        """Connect to the control plane, serve the session, report how it ended."""
        session = self.session
        reader, self.writer = await asyncio.open_unix_connection(self.control_socket, limit=wire.MAX_LINE)
        self.reader = reader
        self.send(BotHello(bot_id=self.bot_id, pid=os.getpid(), at=time.time()))
        control = asyncio.create_task(self.read_control(reader), name="control")
        beating = asyncio.create_task(self.heartbeat(), name="heartbeat")
        try:
            if not session.assigned.is_set():
                await session.prepare_warm()
            code, reason, detail = await session.finish()
        finally:
            control.cancel()
            beating.cancel()
            await asyncio.gather(control, beating, return_exceptions=True)
        self.send(Ended(reason=reason, detail=detail))
        try:
            await self.writer.drain()
            # Linger until the control plane, having read Ended, closes the link: had this
            # process gone at once, a caller frame relayed meanwhile would fail with EPIPE, and
            # that error discards the unread Ended on the control plane's side ("crashed").
            if self.reader is not None:
                await asyncio.wait_for(self.reader.read(), LINGER_S)
            self.writer.close()
        except (ConnectionError, RuntimeError, asyncio.TimeoutError, wire.WireError):
            pass
        return code

    async def heartbeat(self) -> None:
        """Tell the control plane this bot's event loop runs (it kills a bot silent too long)."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.send(Heartbeat())

    async def read_control(self, reader: asyncio.StreamReader) -> None:
        current: asyncio.StreamReader | None = reader
        while current is not None:
            await self._read_until_closed(current)
            if self.session.done.is_set():
                return
            current = await self._reconnect()
            if current is None:
                log.warning("session %s: control plane went away; ending the session", self.session.session_id)
                self.session.stop("control_lost")
                return

    async def _reconnect(self) -> asyncio.StreamReader | None:
        session = self.session
        if session.session_id is None:
            return None  # a warm bot is simply replaced
        log.warning("session %s: control link lost; trying to resume for %.0fs", session.session_id,
                    self.spec.reconnect_s)
        deadline = time.monotonic() + self.spec.reconnect_s
        while time.monotonic() < deadline and not session.done.is_set():
            await asyncio.sleep(0.5)
            try:
                reader, self.writer = await asyncio.open_unix_connection(self.control_socket, limit=wire.MAX_LINE)
                self.reader = reader
            except OSError:
                continue
            self.writer.write(encode(BotResume(bot_id=self.bot_id, session_id=session.session_id,
                                               agent=self.spec.agent, pid=os.getpid(), at=time.time())))
            for observation in self.observations:
                self.writer.write(encode(observation))
            log.info("session %s: resumed with a new control plane", session.session_id)
            return reader
        return None

    async def _read_until_closed(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self.on_message(decode(line))
        except (ConnectionError, wire.WireError) as exc:
            log.warning("session %s: control link failed: %s", self.session.session_id, exc)

    def on_message(self, message: Message) -> None:
        session = self.session
        if isinstance(message, Assign):
            self.send(session.assign(message))
            # Answered first: re-labelling the log handlers takes milliseconds the caller need not wait for.
            session.relabel_logs()
        elif isinstance(message, Preload):
            session.preload_more(message.models)
        elif isinstance(message, Offer):
            session.spawn(self._reply(session.answer_offer(message)))
        elif isinstance(message, Ice):
            session.spawn(self._reply(session.add_candidates(message)))
        elif isinstance(message, WsOpen):
            session.spawn(self._reply(session.answer_stream(message)))
        elif isinstance(message, WsIn):
            session.stream_in(message)
        elif isinstance(message, WsClose):
            session.stream_closed(message)
        elif isinstance(message, Stop):
            session.stop(message.reason)
        else:
            log.warning("bot %s: unexpected %s message; ignored", self.bot_id, message.kind)

    async def _reply(self, answering: Awaitable[Message]) -> None:
        self.send(await answering)


def run_bot_host(*, control_socket: str, spec: BotSpec, bot_id: str, start: SessionStart | None,
                 bot: BotFunction, warmup: Callable[[], Awaitable[Any]] | None,
                 preload: list[dict[str, Any]] | None = None) -> int:
    """Entry point in a freshly forked child; returns the process exit code."""
    from voxfleet.observability.logs import configure_logging
    from voxfleet.transports.ice import advertise_addresses
    from voxfleet.transports.media_ports import loop_factory

    configure_logging(spec.log_level, process=f"bot:{start.session_id if start else 'warm-' + bot_id[:8]}")
    advertise_addresses(spec.advertised_addresses)
    host = BotHost(control_socket=control_socket, spec=spec, bot_id=bot_id, start=start, bot=bot, warmup=warmup,
                   preload=preload)
    # Not closed: the session is over once run() returns (its end reported, its connections
    # closed), and this process exits at once (template.become_bot). Closing the runner would
    # first wait for every task and executor thread the bot left behind: a bot that raised
    # with its pipeline still running hung here and its caller waited for the record to end.
    runner = asyncio.Runner(loop_factory=loop_factory(spec.media_ports))
    return runner.run(host.run())
