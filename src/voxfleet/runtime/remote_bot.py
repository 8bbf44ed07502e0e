"""The control plane's half of a bot, shared by both backends.

A :class:`RemoteBot` is a ``BotHandle`` (``runtime.protocol``) written once against two
operations its backend provides: ``_exchange`` (send a request message, wait for its reply) and
``_send`` (a message that needs no reply: a caller's frame). It builds each request
(``runtime.messages``), maps the replies to results or exceptions, and folds what the bot reports
about its session into ``info`` (:meth:`observe`): the local backend reads those reports from the
control socket, the Ray backend from the actor's long poll.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from voxfleet.exceptions import BotError, MediaPortsExhausted
from voxfleet.observability.turns import TurnBreakdown
from voxfleet.runtime.messages import (
    Answer,
    Assign,
    Assigned,
    Error,
    Event,
    Ice,
    IceOk,
    Message,
    ModelLoad,
    Offer,
    Preloaded,
    RelayStats,
    Request,
    SessionStart,
    Transcript,
    Ttfb,
    Turn,
    WarmReady,
    WsClose,
    WsOpen,
    WsOpened,
    WsOut,
)
from voxfleet.runtime.protocol import BotExit, BotInfo, IceServersFor
from voxfleet.runtime.streams import RelayStream, clock_id


class RemoteBot:
    """A bot seen from the control plane. Warm bots have no session yet."""

    def __init__(self, bot_id: str, agent: str, session_id: str | None, ice_servers: IceServersFor,
                 info: BotInfo) -> None:
        self.bot_id = bot_id
        self.agent = agent
        self.session_id = session_id
        self.ice_servers = ice_servers  # minted per session, handed over with it
        self.info = info
        self.stream: RelayStream | None = None
        self._ids = itertools.count(1)
        self._stop_reason: str | None = None
        self._exit: asyncio.Future[BotExit] = asyncio.get_running_loop().create_future()

    # -- what a backend provides ------------------------------------------------------------
    async def _exchange(self, request: Request, timeout: float) -> Message:
        """Send `request`; return the bot's reply. Raises SignalingTimeout or BotError."""
        raise NotImplementedError

    def _send(self, message: Message) -> None:
        """Send a message that has no reply."""
        raise NotImplementedError

    def _ask_stop(self, reason: str) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def _on_assign(self) -> None:
        """Called as a warm bot is handed its session, before the bot hears of it."""

    # -- the BotHandle protocol -------------------------------------------------------------
    async def assign(self, session_id: str, body: Any, timeout: float) -> None:
        """Hand a warm bot its session."""
        self.session_id = session_id
        self._on_assign()
        start = SessionStart(session_id=session_id, body=body, ice_servers=self.ice_servers(session_id))
        reply = await self._exchange(Assign(id=next(self._ids), start=start), timeout)
        if not isinstance(reply, Assigned):
            raise BotError(f"bot {self.bot_id} refused session {session_id}: {_why(reply)}")

    async def offer(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        reply = await self._exchange(Offer(id=next(self._ids), **request), timeout)
        if isinstance(reply, Error) and reply.code == MediaPortsExhausted.code and reply.media_ports:
            first, last, host = reply.media_ports
            raise MediaPortsExhausted(first, last, host)
        if not isinstance(reply, Answer):
            raise BotError(f"bot rejected the offer: {_why(reply)}")
        return {k: v for k, v in (("sdp", reply.sdp), ("type", reply.type), ("pc_id", reply.pc_id)) if v is not None}

    async def add_ice_candidates(self, pc_id: str, candidates: list[dict[str, Any]], timeout: float) -> None:
        reply = await self._exchange(Ice(id=next(self._ids), pc_id=pc_id, candidates=candidates), timeout)
        if not isinstance(reply, IceOk):
            raise BotError(f"bot rejected the candidates: {_why(reply)}")

    async def open_stream(self, request: dict[str, Any], timeout: float) -> RelayStream:
        """Start the session's bot on a relayed media WebSocket ({transport, path, headers, client})."""
        if self.stream is not None:
            raise BotError(f"session {self.session_id} already has a media stream")
        self.stream = RelayStream(self._send)
        headers = [(str(k), str(v)) for k, v in request.get("headers", [])]
        reply = await self._exchange(WsOpen(id=next(self._ids), **{**request, "headers": headers},
                                            clock=clock_id()), timeout)
        if not isinstance(reply, WsOpened):
            raise BotError(f"bot refused the media stream: {_why(reply)}")
        return self.stream

    async def wait_exit(self) -> BotExit:
        return await asyncio.shield(self._exit)

    async def stop(self, reason: str, grace: float = 2.0) -> None:
        """Ask the bot to end the session; kill it if it has not exited after `grace` seconds."""
        self._stop_reason = self._stop_reason or reason
        if self._exit.done():
            return
        self._ask_stop(reason)
        try:
            await asyncio.wait_for(asyncio.shield(self._exit), grace)
        except asyncio.TimeoutError:
            self.kill()
            await asyncio.shield(self._exit)

    # -- what the bot reports ---------------------------------------------------------------
    def observe(self, message: Message) -> None:
        """Fold one of the bot's reports into `info` (or its media stream)."""
        info = self.info
        if isinstance(message, (WsOut, WsClose, RelayStats)):
            if self.stream is not None:
                self.stream.on_bot_message(message)
        elif isinstance(message, Event):
            info.events[message.name] = time.time()
        elif isinstance(message, WarmReady):
            info.warmup_ms = message.warmup_ms
            info.preloaded = message.preloaded
            info.events["warm_ready"] = time.time()
        elif isinstance(message, Preloaded):
            info.preloaded = message.count
        elif isinstance(message, ModelLoad):
            info.model_loads.append({**message.model, "in_session": message.in_session})
        elif isinstance(message, Turn):
            info.turns.append(TurnBreakdown.from_report(
                {"v2v_ms": message.v2v_ms, "stages_ms": message.stages_ms, "speech_end": message.speech_end}))
        elif isinstance(message, Transcript):
            info.transcript.append({"role": message.role, "text": message.text, "at": message.at})
        elif isinstance(message, Ttfb):
            info.ttfb_s.setdefault(message.processor, []).append(message.seconds)


def _why(reply: Message) -> str:
    return reply.message if isinstance(reply, Error) else f"unexpected {reply.kind} reply"
