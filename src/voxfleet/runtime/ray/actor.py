"""The bot actor: one Ray actor process on a cluster node hosts ONE session, then is killed.

It runs the same ``BotHost`` as a locally forked bot, driven by actor method calls instead of the
control socket: ``start`` (import the bot, run its ``warmup()`` when warm), ``assign``,
``offer`` / ``ice`` (signaling relayed by the control plane), ``stop``, ``run`` (returns how the
session ended) and ``events`` (a long poll of the bot's observations: events, turns, transcript,
TTFB, memory). Media goes client <-> this process directly, on this node's address.

Ray's CPU and memory numbers are bookkeeping for placement only, so the profile's limits are
enforced here, as the local backend's service does: the session ends with ``memory_limit`` when
the process's PSS is over its profile's memory, and with ``max_duration`` at ``max_session_s``.

This module is imported by Ray workers on every node: it must not import the control plane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from voxfleet.runtime.bot_host import BotHost

log = logging.getLogger(__name__)

OBSERVED = ("event", "turn", "transcript", "ttfb", "warm_ready", "memory",
            "ws_out", "ws_close", "relay_stats")  # the last three: a relayed media WebSocket
MEMORY_REPORT_STEP_MB = 4.0  # report memory when it moved at least this much
RELABEL_DELAY_S = 0.05


class BotActor:
    """Instantiated by Ray (``ray.remote(BotActor)``) with the bot's spec; see RayBackend.launch."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host: BotHost | None = None
        self.observed: list[tuple[str, dict[str, Any]]] = []
        self.changed: asyncio.Event | None = None
        self.finished = False
        self.tasks: set[asyncio.Task] = set()
        self.reported_mb = 0.0
        self.next_frame = 0  # caller frames of a media WebSocket apply in the order they were sent
        self.early_frames: dict[int, tuple[str, dict[str, Any]]] = {}

    async def ping(self) -> int:
        """Answers once the actor exists (placed, process started)."""
        return os.getpid()

    async def start(self) -> dict[str, Any]:
        import ray

        from voxfleet.bots.loader import load_bot_module
        from voxfleet.observability.logs import configure_logging
        from voxfleet.transports.ice import advertise_addresses

        spec = self.spec
        session_id = spec.get("session_id")
        os.environ.update(spec.get("env") or {})
        configure_logging(spec.get("log_level", "INFO"), process=f"bot:{session_id or 'warm-' + spec['bot_id'][:8]}")
        address = ray.util.get_node_ip_address()
        advertise_addresses([address])  # this node's address: media never crosses the control plane
        module = load_bot_module(spec["bot"], spec["agent"])
        preload = getattr(module, "preload", None)
        if callable(preload):
            preload()
        self.changed = asyncio.Event()
        self.host = BotHost(
            control_socket=None, bot_id=spec["bot_id"], session_id=session_id, agent=spec["agent"],
            bot=module.bot, warmup=getattr(module, "warmup", None), body=spec.get("body"),
            ice_servers=spec.get("ice_servers") or [], log_level=spec.get("log_level", "INFO"),
            idle_timeout=spec.get("idle_timeout", 60.0), emit=self._emit,
        )
        if session_id is None:
            await self.host.prepare_warm()
            if self.host.done.is_set():
                return {"ok": False, "detail": f"warmup() of agent {spec['agent']} failed; see the bot's log"}
        else:
            self._enforce_limits()
        warm_ready = next((fields for kind, fields in self.observed if kind == "warm_ready"), {})
        return {"ok": True, "pid": os.getpid(), "address": address, "warmup_ms": warm_ready.get("warmup_ms")}

    async def assign(self, session_id: str, body: Any, ice_servers: list[dict[str, Any]]) -> None:
        assert self.host is not None
        self.host.take_session({"session_id": session_id, "body": body, "ice_servers": ice_servers})
        # After Ray has sent this reply: re-labelling the logs takes milliseconds (~13 ms measured
        # on a warm assignment) that the caller need not wait for.
        asyncio.get_running_loop().call_later(RELABEL_DELAY_S, self.host.relabel_logs)
        self._enforce_limits()

    async def offer(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.host is not None
        try:
            return {"answer": await self.host.offer(request)}
        except Exception as exc:  # noqa: BLE001 - answered to the control plane, which maps it
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def ice(self, pc_id: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.host is not None
        try:
            await self.host.add_ice({"pc_id": pc_id, "candidates": candidates})
        except Exception as exc:  # noqa: BLE001
            return {"error": str(getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}")}
        return {}

    async def ws_open(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run the session's bot on a media WebSocket relayed by the control plane."""
        assert self.host is not None
        try:
            await self.host.open_stream(request)
        except Exception as exc:  # noqa: BLE001 - answered to the control plane, which maps it
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {}

    async def ws_frame(self, seq: int, kind: str, message: dict[str, Any]) -> None:
        """A caller frame (ws_in) or the caller's close (ws_close), number `seq` of the stream.
        Ray starts an async actor's calls concurrently, so the order is restored here."""
        self.early_frames[seq] = (kind, message)
        while self.next_frame in self.early_frames and self.host is not None:
            kind, message = self.early_frames.pop(self.next_frame)
            self.next_frame += 1
            if kind == "ws_in":
                self.host.stream_in(message)
            else:
                self.host.stream_closed(message)

    async def stop(self, reason: str) -> None:
        if self.host is not None:
            self.host.stop(reason)

    async def run(self) -> dict[str, Any]:
        """Serve the session; return how it ended. The control plane kills the actor after."""
        assert self.host is not None and self.changed is not None
        try:
            code, reason, detail = await self.host.finish()
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.finished = True
            self.changed.set()
        return {"exit_code": code, "reason": reason, "detail": detail}

    async def events(self, cursor: int) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """Observations from `cursor` on, once there is one (or the session is over)."""
        assert self.changed is not None
        while len(self.observed) <= cursor and not self.finished:
            self.changed.clear()
            await self.changed.wait()
        return self.observed[cursor:], self.finished

    # -- inside the bot -----------------------------------------------------------------------
    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        if kind in OBSERVED and self.changed is not None:
            self.observed.append((kind, fields))
            self.changed.set()

    def _enforce_limits(self) -> None:
        self._spawn(self._watch_memory())
        self._spawn(self._max_duration())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch_memory(self) -> None:
        from voxfleet.runtime.local.node import pss_mb

        limit = self.spec["mem_limit_mb"]
        while True:
            await asyncio.sleep(self.spec.get("memory_check_s", 1.0))
            used = pss_mb(os.getpid())
            if used is not None:
                if abs(used - self.reported_mb) >= MEMORY_REPORT_STEP_MB:
                    self.reported_mb = used
                    self._emit("memory", {"mb": round(used, 1), "at": time.time()})
                if used > limit and self.host is not None:
                    log.warning("session %s: bot uses %.0f MiB PSS, over its %d MiB limit; ending",
                                self.host.session_id, used, limit)
                    self.host.stop("memory_limit")
                    return

    async def _max_duration(self) -> None:
        await asyncio.sleep(self.spec["max_session_s"])
        if self.host is not None:
            log.warning("session %s: reached the %.0fs limit; ending", self.host.session_id,
                        self.spec["max_session_s"])
            self.host.stop("max_duration")
