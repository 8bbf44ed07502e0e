"""The bot actor: one Ray actor process on a cluster node hosts ONE session, then is killed.

This is the Ray driver of ``bot_session.BotSession`` (the same session logic a locally forked
bot runs), driven by actor method calls instead of the control socket: ``start`` (import the
bot, run its ``warmup()`` when warm), ``request`` (an ``Assign``, ``Offer``, ``Ice`` or
``WsOpen`` message of ``runtime.messages``, answered with its reply message), ``ws_frame`` (a
relayed caller frame), ``stop``, ``run`` (returns how the session ended) and ``events`` (a long
poll of the bot's observations, as messages: events, turns, transcript, TTFB, memory, the relayed
WebSocket's frames). Media goes client <-> this process directly, on this node's address.

The profile's limits are enforced by the control plane's session service, as for local bots
(``max_duration`` at ``max_session_s``; ``memory_limit`` when the bot's PSS is over its profile's
memory): Ray's CPU and memory numbers are bookkeeping for placement only, so this actor samples
its own PSS every ``memory_check_s`` and reports it (``Memory``) for the service to check.

This module is imported by Ray workers on every node: it must not import the control plane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from voxfleet.runtime.bot_session import BotSession
from voxfleet.runtime.messages import (
    Assign,
    BotSpec,
    Error,
    Event,
    Ice,
    Memory,
    Message,
    Offer,
    RelayStats,
    Request,
    SessionStart,
    Transcript,
    Ttfb,
    Turn,
    WarmReady,
    WsClose,
    WsIn,
    WsOpen,
    WsOut,
)

log = logging.getLogger(__name__)

OBSERVED = (Event, Turn, Transcript, Ttfb, WarmReady, Memory,
            WsOut, WsClose, RelayStats)  # the last three: a relayed media WebSocket
MEMORY_REPORT_STEP_MB = 4.0  # report memory when it moved at least this much
RELABEL_DELAY_S = 0.05


class BotActor:
    """Instantiated by Ray (``ray.remote(BotActor)``); see RayBackend.launch."""

    def __init__(self, spec: BotSpec, bot_id: str, start: SessionStart | None, env: dict[str, str]) -> None:
        self.spec = spec
        self.bot_id = bot_id
        self.start_with = start
        self.env = env
        self.session: BotSession | None = None
        self.observed: list[Message] = []
        self.changed: asyncio.Event | None = None
        self.finished = False
        self.tasks: set[asyncio.Task] = set()
        self.reported_mb = 0.0
        self.next_frame = 0  # caller frames of a media WebSocket apply in the order they were sent
        self.early_frames: dict[int, WsIn | WsClose] = {}

    async def ping(self) -> int:
        """Answers once the actor exists (placed, process started)."""
        return os.getpid()

    async def start(self) -> dict[str, Any]:
        import ray

        from voxfleet.bots.loader import load_bot_module
        from voxfleet.observability.logs import configure_logging
        from voxfleet.transports.ice import advertise_addresses

        spec, start = self.spec, self.start_with
        os.environ.update(self.env)
        configure_logging(spec.log_level, process=f"bot:{start.session_id if start else 'warm-' + self.bot_id[:8]}")
        address = ray.util.get_node_ip_address()
        advertise_addresses([address])  # this node's address: media never crosses the control plane
        module = load_bot_module(spec.bot, spec.agent)
        preload = getattr(module, "preload", None)
        if callable(preload):
            preload()
        self.changed = asyncio.Event()
        self.session = BotSession(spec=spec, bot_id=self.bot_id, start=start, bot=module.bot,
                                  warmup=getattr(module, "warmup", None), emit=self._emit)
        if start is None:
            await self.session.prepare_warm()
            if self.session.done.is_set():
                return {"ok": False, "detail": f"warmup() of agent {spec.agent} failed; see the bot's log"}
        else:
            self._spawn(self._sample_memory())
        warm_ready = next((m for m in self.observed if isinstance(m, WarmReady)), None)
        return {"ok": True, "pid": os.getpid(), "address": address,
                "warmup_ms": warm_ready.warmup_ms if warm_ready else None}

    async def request(self, message: Request) -> Message:
        """A request of the control plane; returns its reply."""
        session = self.session
        assert session is not None
        if isinstance(message, Assign):
            reply = session.assign(message)
            # After Ray has sent this reply: re-labelling the logs takes milliseconds (~13 ms measured
            # on a warm assignment) that the caller need not wait for.
            asyncio.get_running_loop().call_later(RELABEL_DELAY_S, session.relabel_logs)
            self._spawn(self._sample_memory())
            return reply
        if isinstance(message, Offer):
            return await session.answer_offer(message)
        if isinstance(message, Ice):
            return await session.add_candidates(message)
        if isinstance(message, WsOpen):
            return await session.answer_stream(message)
        return Error(id=0, message=f"unexpected request {message!r:.60}")

    async def ws_frame(self, seq: int, message: WsIn | WsClose) -> None:
        """A caller frame or the caller's close, number `seq` of the stream. Ray starts an async
        actor's calls concurrently, so the order is restored here."""
        self.early_frames[seq] = message
        while self.next_frame in self.early_frames and self.session is not None:
            frame = self.early_frames.pop(self.next_frame)
            self.next_frame += 1
            if isinstance(frame, WsIn):
                self.session.stream_in(frame)
            else:
                self.session.stream_closed(frame)

    async def stop(self, reason: str) -> None:
        if self.session is not None:
            self.session.stop(reason)

    async def run(self) -> dict[str, Any]:
        """Serve the session; return how it ended. The control plane kills the actor after."""
        assert self.session is not None and self.changed is not None
        try:
            code, reason, detail = await self.session.finish()
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.finished = True
            self.changed.set()
        return {"exit_code": code, "reason": reason, "detail": detail}

    async def events(self, cursor: int) -> tuple[list[Message], bool]:
        """Observations from `cursor` on, once there is one (or the session is over)."""
        assert self.changed is not None
        while len(self.observed) <= cursor and not self.finished:
            self.changed.clear()
            await self.changed.wait()
        return self.observed[cursor:], self.finished

    # -- inside the bot -----------------------------------------------------------------------
    def _emit(self, message: Message) -> None:
        if isinstance(message, OBSERVED) and self.changed is not None:
            self.observed.append(message)
            self.changed.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _sample_memory(self) -> None:
        """Report this process's PSS when it moved; the control plane holds it to the profile."""
        from voxfleet.runtime.local.node import pss_mb

        while True:
            await asyncio.sleep(self.spec.memory_check_s)
            used = pss_mb(os.getpid())
            if used is not None and abs(used - self.reported_mb) >= MEMORY_REPORT_STEP_MB:
                self.reported_mb = used
                self._emit(Memory(mb=round(used, 1), at=time.time()))
