"""The asyncio driver of the admission core: real bots, real timers, session records.

Every decision (warm, cold, retire, queue, reject, refill) is made by the sans-I/O core,
``scheduler.admission.Admission``; this module feeds it events (a start request, a bot ready,
a launch or assignment failed, a bot gone, a queue wait over, nodes changed, a tick) and carries
out the commands it returns with a runtime backend (``runtime.protocol``). It also keeps each
session's record (``sessions.SessionRecord``) and enforces the per-session limits: the offer
deadline, the maximum duration and the memory limit (sampled every ``memory_check`` seconds,
since the kernel reports memory only when asked). Pools are reconsidered after every event and
every ``pool_tick`` seconds (a forecast decays with time, not only with events).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxfleet.scheduler.client_bounds import ClientBounds, ClientBoundsSettings, retry_after_s
from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import (
    AgentNotFound,
    AtCapacity,
    BotError,
    ClientLimited,
    MediaPortsExhausted,
    NotReady,
    SessionConflict,
    SessionNotFound,
    PeerNotFound,
    SignalingTimeout,
    Unplaceable,
)
from voxfleet.observability.metrics import Metrics
from voxfleet.runtime.protocol import Backend, BotHandle
from voxfleet.runtime.streams import RelayStream
from voxfleet.scheduler.admission import (
    AgentPool, Admission, Assign, Command, Dequeue, Enqueue, Expire, Launch, Reject, Stop,
)
from voxfleet.scheduler.capacity import Resources
from voxfleet.scheduler.placement import ClusterLedger, Node
from voxfleet.scheduler.sessions import ACTIVE, ENDED, QUEUED, STARTING, SessionRecord, SessionTable
from voxfleet.tasks import BackgroundTasks

__all__ = ["AgentPool", "Limits", "SessionService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    offer_timeout: float = 30.0
    signaling_timeout: float = 15.0
    queue_wait: float = 30.0
    max_session: float = 3600.0
    memory_check: float = 1.0
    refill_concurrency: int = 1
    pool_tick: float = 5.0
    bot_wait: float = 60.0  # longest a signaling request waits for its session's bot (queue + start)
    max_candidates: int = 64  # trickled ICE candidates per session


@dataclass
class Call:
    """A session the service drives: its record, and its bot once it has one."""

    record: SessionRecord
    launched: asyncio.Future[BotHandle]
    timer: asyncio.Task[None] | None = None  # the queue deadline, then the offer/duration deadlines
    pc_id: str | None = None  # its WebRTC peer connection, once the bot answered an offer
    candidates: int = 0  # trickled ICE candidates relayed so far
    streamed: bool = False  # its media WebSocket was opened (one per session)
    connect_timeout: float | None = None  # its own bound to connect (an outbound call rings), else offer_timeout


class SessionService:
    def __init__(
        self,
        backend: Backend,
        pools: list[AgentPool],
        ledger: ClusterLedger,
        *,
        limits: Limits,
        queue_max: int = 20,
        keep_ended: int = 1000,
        bounds: ClientBoundsSettings | None = None,
        client_share: float = 1.0,
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.core = Admission(pools, ledger, queue_max=queue_max, queue_wait_s=limits.queue_wait,
                              refill_concurrency=limits.refill_concurrency, client_share=client_share)
        # per-client bounds of callers without a private key (scheduler.client_bounds)
        self.bounds = ClientBounds(bounds or ClientBoundsSettings())
        self.pools = self.core.pools
        self.agents = list(self.pools)
        self.table = SessionTable(keep_ended)
        self.calls: dict[str, Call] = {}  # live sessions by id
        self.live_bots: dict[str, BotHandle] = {}  # bot_id -> bot (warm or busy)
        self.tasks = BackgroundTasks(log)
        self._sessions_done = asyncio.Event()
        self.metrics = Metrics()
        self.metrics.watch(self.capacity)
        # Called (synchronously, must not block) whenever a session record changes state.
        self.on_change: Callable[[SessionRecord], None] = lambda record: None
        backend.on_nodes_changed = self.sync_nodes  # a cluster backend reports nodes joining and leaving

    # -- queries ----------------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self.core.accepting

    def get(self, session_id: str) -> SessionRecord:
        record = self.table.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        if record.state == QUEUED:
            record.queue_position = self.core.queue_position(session_id)
        return record

    def ready(self) -> bool:
        return self.accepting and self.backend.ready()

    def capacity(self) -> dict[str, Any]:
        def pid_of(bot_id: str) -> int | None:
            bot = self.live_bots.get(bot_id)
            return None if bot is None else bot.info.pid

        return self.core.snapshot(time.time(), pid_of)

    # -- lifecycle --------------------------------------------------------------------------
    def sync_nodes(self) -> None:
        """Take the backend's current nodes (None: a fixed, configured capacity)."""
        nodes = self.backend.nodes()
        if nodes is None:
            return
        added, removed, commands = self.core.nodes_changed(
            (Node(n.node_id, n.region, n.address, Resources(n.cpu_millis, n.mem_mb, n.kbps)) for n in nodes),
            time.time())
        for node in added:
            log.info("node %s joined (region %s, %s, %s)", node.node_id[:12], node.region, node.address,
                     node.capacity.as_dict())
        for node_id in removed:
            log.warning("node %s left; its sessions end (node_lost)", node_id[:12])
        self._apply(commands)

    def start(self) -> None:
        """Begin filling warm pools and sampling memory (after the backend is ready)."""
        self.tasks.spawn(self._watch_memory(), "memory-watch")
        self.tasks.spawn(self._tick(), "pool-tick")

    async def drain(self, timeout: float) -> None:
        """Stop admitting, release warm bots, let sessions finish within `timeout`."""
        self._apply(self.core.drain())
        if self.table.count():
            log.info("draining: waiting up to %.0fs for %d session(s)", timeout, self.table.count())
            self._sessions_done.clear()
            try:
                await asyncio.wait_for(self._sessions_done.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("drain: %d session(s) still live after %.0fs", self.table.count(), timeout)

    async def aclose(self) -> None:
        self.core.accepting = False
        await self.tasks.cancel_all()

    # -- commands ---------------------------------------------------------------------------
    def check_rate(self, client: str) -> None:
        """Spend one start of ``client``'s rate; ClientLimited (429 RATE_LIMITED) when it has none."""
        wait = self.bounds.take(client, time.monotonic())
        if wait is not None:
            raise ClientLimited(f"client {client} is starting sessions faster than "
                                f"{self.bounds.settings.rate_per_s:g}/s (burst {self.bounds.settings.burst}); "
                                f"retry in {wait:.1f}s", retry_after_s(wait), "RATE_LIMITED")

    async def start_session(self, agent: str, body: Any, transport: str = "webrtc",
                            region: str | None = None, client: str | None = None, *, queue: bool = True,
                            connect_timeout: float | None = None) -> SessionRecord:
        """Admit a session. ``client``: who asks, bounded per client (None: trusted, a private key).
        ``queue=False``: AtCapacity rather than a place in the queue; ``connect_timeout``: how long
        its caller may take to connect (default offer_timeout)."""
        if agent not in self.pools:
            raise AgentNotFound(agent, self.agents)
        if not self.accepting:
            raise NotReady("voxfleet is not ready to serve sessions (starting or draining)")
        if not (self.backend.agent_ready(agent) or self.pools[agent].warm):  # a warm bot needs no template
            raise NotReady(f"agent {agent} is not ready to serve sessions (its bots cannot be started now)")
        if client is not None and not self.bounds.may_start(client):
            raise ClientLimited(f"client {client} has {self.bounds.pending(client)} session(s) not yet connected, "
                                f"the most it may ({self.bounds.settings.max_pending}); connect or end them first",
                                retry_after_s(self.limits.offer_timeout), "TOO_MANY_PENDING")
        record = SessionRecord(session_id=str(uuid.uuid4()), agent=agent, transport=transport,
                               region_requested=region)
        commands = self.core.start_requested(record.session_id, agent, body, region, record.created_at, client,
                                             queue=queue)
        rejected = [c for c in commands if isinstance(c, Reject)]
        if rejected:
            self._apply([c for c in commands if not isinstance(c, Reject)])
            self.metrics.rejected.labels(agent).inc()
            raise rejected[0].error
        self.calls[record.session_id] = Call(record, asyncio.get_running_loop().create_future(),
                                             connect_timeout=connect_timeout)
        self.table.add(record)
        if client is not None:
            self.bounds.started(client, record.session_id)
        self._apply(commands)
        self.on_change(record)
        return record

    async def offer(self, session_id: str, request: dict[str, Any], agent: str | None = None) -> dict[str, Any]:
        """Relay a WebRTC offer: the session's first (no ``pc_id``), or a renegotiation of its
        peer connection (its ``pc_id``). Anything else is refused before the bot sees it."""
        record = self._webrtc(session_id, agent, "accept a WebRTC offer")
        call = self.calls.get(session_id)
        pc_id = request.get("pc_id")
        if call is not None and call.pc_id is not None:
            if pc_id is None:
                raise SessionConflict(session_id, f"connected already (peer connection {call.pc_id})",
                                      "accept a second offer without its pc_id")
            if pc_id != call.pc_id:
                raise PeerNotFound(session_id, pc_id)
        elif pc_id is not None:
            raise PeerNotFound(session_id, pc_id)
        bot = await self._bot_for(record, "accept an offer")
        record.mark("offer_received")
        try:
            answer = await bot.offer(request, self.limits.signaling_timeout)
        except MediaPortsExhausted:
            # this session cannot get media ports now: end it so its reservation frees at once
            self.tasks.spawn(bot.stop(EndReason.MEDIA_PORTS_EXHAUSTED), f"no-ports:{session_id}")
            raise
        if call is not None and isinstance(answer.get("pc_id"), str):
            call.pc_id = answer["pc_id"]
        if record.activate():
            record.mark("answered")
            self.bounds.connected(session_id)
            self.on_change(record)
        return answer

    async def add_ice_candidates(self, session_id: str, pc_id: str, candidates: list[dict[str, Any]],
                                 agent: str | None = None) -> None:
        """Relay trickled candidates to the session's peer connection (at most
        ``max_candidates`` over the session)."""
        record = self._webrtc(session_id, agent, "add ICE candidates")
        call = self.calls.get(session_id)
        if call is None:
            raise SessionConflict(session_id, record.state, "add ICE candidates")
        if call.pc_id is None:
            raise SessionConflict(session_id, "not connected yet (no answered offer)", "add ICE candidates")
        if pc_id != call.pc_id:
            raise PeerNotFound(session_id, pc_id)
        if call.candidates + len(candidates) > self.limits.max_candidates:
            raise SessionConflict(session_id, f"at its limit of {self.limits.max_candidates} ICE candidates",
                                  f"add {len(candidates)} more")
        call.candidates += len(candidates)
        bot = await self._bot_for(record, "add ICE candidates")
        await bot.add_ice_candidates(pc_id, candidates, self.limits.signaling_timeout)

    async def open_stream(self, session_id: str, request: dict[str, Any]) -> RelayStream:
        """Connect a media WebSocket (phone call stream, generic WebSocket client) to the
        session's bot; the caller's frames are then relayed through the returned stream."""
        record = self.get(session_id)
        call = self.calls.get(session_id)
        if record.transport == "webrtc":
            raise SessionConflict(session_id, "a webrtc session (transport)", "open a media stream")
        if call is not None and call.streamed:
            raise SessionConflict(session_id, "streaming already", "open a second media stream")
        if call is not None:
            call.streamed = True
        bot = await self._bot_for(record, "open a media stream")
        record.mark("stream_connected")
        stream = await bot.open_stream(request, self.limits.signaling_timeout)
        if record.activate():
            record.mark("answered")
            self.bounds.connected(session_id)
            self.on_change(record)
        return stream

    async def bot_started(self, session_id: str) -> None:
        """Wait until the session has its bot (bounded by bot_wait); BotError if it could not start."""
        await self._bot_for(self.get(session_id), "start its bot")

    async def hang_up(self, session_id: str, reason: EndReason = EndReason.HANGUP) -> SessionRecord:
        record = self.get(session_id)
        if record.state == ENDED:
            return record
        if record.state == QUEUED:
            self._apply(self.core.leave_queue(session_id, reason, "hung up while queued", time.time()))
            return record
        call = self.calls.get(session_id)
        launched = None if call is None else call.launched
        if launched is not None and launched.done() and not launched.exception():
            await launched.result().stop(reason)
        else:
            record.end(reason, "hung up before the bot started")
        return record

    def adopt(self, record: SessionRecord, bot: BotHandle) -> None:
        """Take over a session whose bot outlived a restart of the control plane."""
        if not self.core.adopt(record.session_id, bot.bot_id, bot.agent, bot.info.region):
            log.warning("session %s: resumed over capacity (its reservation predates this run)", record.session_id)
        record.node, record.region = bot.info.node, bot.info.region
        record.mark("resumed")
        call = Call(record, asyncio.get_running_loop().create_future())
        call.launched.set_result(bot)
        self.calls[record.session_id] = call
        self.table.add(record)
        self._watch_bot(bot)
        self._bot_owns(call, bot)
        self.on_change(record)
        if record.transport != "webrtc" and "stream_connected" in record.timings_ms:
            # Its caller's media WebSocket was held (and relayed) by the control plane that
            # stopped: nothing can reach this call any more. Without this it held its bot and
            # reservation until max_session_s.
            log.warning("session %s: its %s media stream went with the previous control plane; ending it",
                        record.session_id, record.transport)
            record.end(EndReason.CONTROL_RESTART, f"its {record.transport} media stream was relayed by the "
                                                  "control plane that restarted")
            self.tasks.spawn(bot.stop(EndReason.CONTROL_RESTART), f"stream-lost:{record.session_id}")

    # -- carrying out the core's commands -------------------------------------------------------
    def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Launch) and command.session_id is None:
                self.tasks.spawn(self._warm_one(command), f"warm:{command.bot_id}")
            elif isinstance(command, (Launch, Assign)):
                assert command.session_id is not None
                call = self.calls[command.session_id]
                call.record.region = self.core.bots[command.bot_id].region
                self.tasks.spawn(self._serve(call, command), f"session:{command.session_id}")
            elif isinstance(command, Stop):
                bot = self.live_bots.get(command.bot_id)
                if bot is not None:
                    self.tasks.spawn(bot.stop(command.reason, grace=command.grace), f"stop:{command.bot_id}")
            elif isinstance(command, Enqueue):
                call = self.calls[command.session_id]
                call.record.state, call.record.queue_position = QUEUED, command.position
                call.timer = self.tasks.spawn(self._queue_deadline(command.session_id),
                                              f"queue-deadline:{command.session_id}")
                log.info("session %s: queued at #%d for agent %s", command.session_id, command.position,
                         call.record.agent)
            elif isinstance(command, Dequeue):
                call = self.calls[command.session_id]
                if call.timer is not None:
                    call.timer.cancel()
                call.record.state, call.record.queue_position = STARTING, None
                call.record.mark("dequeued")
            elif isinstance(command, Expire):
                self._expire(command)
            else:
                raise AssertionError(f"unexpected command {command!r}")

    async def _serve(self, call: Call, command: Launch | Assign) -> None:
        """Give the session its bot: assign a warm one or launch a cold one."""
        record = call.record
        warm = isinstance(command, Assign)
        try:
            if isinstance(command, Assign):
                bot = self.live_bots[command.bot_id]
                await bot.assign(record.session_id, command.body, self.limits.signaling_timeout)
            else:
                bot = await self.backend.launch(record.agent, command.bot_id, record.session_id, command.body,
                                                node_id=command.node_id)
                self._watch_bot(bot)
        except Exception as exc:  # noqa: BLE001 - recorded as the session's end
            log.error("session %s: bot failed to start: %s", record.session_id, exc)
            call.launched.set_exception(exc)
            call.launched.exception()
            record.end(EndReason.UNPLACEABLE if isinstance(exc, Unplaceable) else EndReason.START_FAILED, str(exc))
            self._finish(call)
            now = time.time()
            self._apply(self.core.assign_failed(record.session_id, now) if warm
                        else self.core.launch_failed(command.bot_id, now))
            return
        record.warm = warm
        record.pid = bot.info.pid
        record.node, record.region = bot.info.node, bot.info.region
        record.mark("bot_assigned")
        record.bot_start_ms = record.timings_ms["bot_assigned"]
        call.launched.set_result(bot)
        start_kind = "warm" if warm else "cold"
        self.metrics.started.labels(record.agent, start_kind).inc()
        self.metrics.assignment.labels(record.agent, start_kind).observe(record.bot_start_ms / 1000)
        log.info("session %s: %s start in %.1f ms (bot %s pid %s)", record.session_id, start_kind,
                 record.bot_start_ms, bot.bot_id, bot.info.pid)
        if record.session_id not in self.calls:  # its bot is already gone
            return
        self._bot_owns(call, bot)
        if record.state == ENDED:  # hung up while the bot was starting
            await bot.stop(record.end_reason or EndReason.HANGUP)

    def _bot_owns(self, call: Call, bot: BotHandle) -> None:
        """From the moment a bot owns the session: its live observations (shown by
        GET /v1/sessions/{id} while the call runs) and its deadlines."""
        record = call.record
        record.turns, record.transcript, record.ttfb_s = bot.info.turns, bot.info.transcript, bot.info.ttfb_s
        record.models = bot.info.model_loads
        call.timer = self.tasks.spawn(self._deadlines(record, bot, call.connect_timeout or self.limits.offer_timeout),
                                      f"deadlines:{record.session_id}")

    async def _warm_one(self, command: Launch) -> None:
        started = time.monotonic()
        try:
            bot = await self.backend.launch(command.agent, command.bot_id, node_id=command.node_id)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up frees its reservation and is logged
            log.error("agent %s: warm bot failed to start: %s", command.agent, exc)
            self._apply(self.core.launch_failed(command.bot_id, time.time()))
            return
        self._watch_bot(bot)
        if self.accepting:
            log.info("agent %s: warm bot %s ready (pid %s, warm-up %s ms)", command.agent, command.bot_id[:8],
                     bot.info.pid, bot.info.warmup_ms)
        self._apply(self.core.bot_ready(command.bot_id, time.time(), time.monotonic() - started))

    def _watch_bot(self, bot: BotHandle) -> None:
        self.live_bots[bot.bot_id] = bot
        self.tasks.spawn(self._on_exit(bot), f"exit:{bot.bot_id}")

    async def _on_exit(self, bot: BotHandle) -> None:
        """A bot is gone: end its session's record, then tell the core (which releases the
        bot's reservation, once, and re-runs admission)."""
        result = await bot.wait_exit()
        self.live_bots.pop(bot.bot_id, None)
        known = self.core.bots.get(bot.bot_id)
        if known is not None and known.state == "warm":
            log.warning("agent %s: warm bot %s ended while idle (%s)", bot.agent, bot.bot_id[:8], result.reason)
        call = None if known is None or known.session_id is None else self.calls.get(known.session_id)
        if call is not None:
            record = call.record
            for name, at in bot.info.events.items():
                if at >= record.created_at and name not in record.timings_ms:
                    record.mark(name, at)
            record.first_audio_at = record.first_audio_at or bot.info.events.get("first_audio")  # phone: by the relay
            if bot.stream is not None:
                record.relay_ms = bot.stream.stats()
            if record.end(EndReason(result.reason), result.detail, result.exit_code, result.signal):
                log.info("session %s: ended (%s) %s", record.session_id, result.reason, result.detail)
            self._observe_latency(record)
            self._finish(call)
        self._apply(self.core.bot_exited(bot.bot_id, time.time()))

    def _finish(self, call: Call) -> None:
        """The session is over (its record has its end): retire it, once."""
        record = call.record
        if self.calls.pop(record.session_id, None) is None:
            return
        self.bounds.ended(record.session_id)
        if call.timer is not None:
            call.timer.cancel()
        record.end(EndReason.SHUTDOWN)  # a no-op unless the session was cut short without a reason
        self.table.retire(record)
        self.on_change(record)
        if not self.table.count():
            self._sessions_done.set()

    def _expire(self, command: Expire) -> None:
        call = self.calls.get(command.session_id)
        if call is None:
            return
        if not call.launched.done():
            call.launched.set_exception(AtCapacity(f"all agents are busy: {command.detail}",
                                                   retry_after_s=command.retry_after_s))
            call.launched.exception()
        call.record.end(command.reason, command.detail)
        self._finish(call)

    def _observe_latency(self, record: SessionRecord) -> None:
        self.metrics.ended.labels(record.agent, record.end_reason or "unknown").inc()
        ttfw = record.latency_summary()["ttfwMs"]
        if ttfw is not None:
            self.metrics.ttfw.labels(record.agent, "warm" if record.warm else "cold").observe(ttfw / 1000)
        self.metrics.observe_turns(record.agent, record.turns)

    # -- timers -------------------------------------------------------------------------------
    async def _deadlines(self, record: SessionRecord, bot: BotHandle, connect_timeout: float) -> None:
        await asyncio.sleep(connect_timeout)
        if record.state not in (ACTIVE, ENDED):
            log.warning("session %s: its caller did not connect within %.0fs; ending", record.session_id,
                        connect_timeout)
            await bot.stop(EndReason.TIMEOUT)
            return
        await asyncio.sleep(max(0.0, self.limits.max_session - connect_timeout))
        log.warning("session %s: reached the %.0fs limit; ending", record.session_id, self.limits.max_session)
        await bot.stop(EndReason.MAX_DURATION)

    async def _queue_deadline(self, session_id: str) -> None:
        await asyncio.sleep(self.limits.queue_wait)
        self._apply(self.core.queue_timeout(session_id, time.time()))

    async def _tick(self) -> None:
        while True:
            self._apply(self.core.tick(time.time()))
            await asyncio.sleep(self.limits.pool_tick)

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self.limits.memory_check)
            for bot in list(self.live_bots.values()):
                if bot.session_id is None:
                    continue
                used = bot.memory_mb()
                limit = self.pools[bot.agent].profile.resources.mem_mb
                if used is not None and used > limit:
                    log.warning("session %s: bot uses %.0f MiB PSS, over its %d MiB limit; ending",
                                bot.session_id, used, limit)
                    self.tasks.spawn(bot.stop(EndReason.MEMORY_LIMIT, grace=0.5), f"memory-limit:{bot.bot_id}")

    # -- internals --------------------------------------------------------------------------
    def _webrtc(self, session_id: str, agent: str | None, action: str) -> SessionRecord:
        """The session, if it is a WebRTC session (of ``agent``, when the route names one)."""
        record = self.get(session_id)
        if agent is not None and agent != record.agent:
            raise SessionNotFound(session_id)
        if record.transport != "webrtc":
            raise SessionConflict(session_id, f"a {record.transport} session (transport), not webrtc", action)
        if record.state == ENDED:
            raise SessionConflict(session_id, f"ended ({record.end_reason})", action)
        return record

    async def _bot_for(self, record: SessionRecord, action: str) -> BotHandle:
        if record.state == ENDED:
            raise SessionConflict(record.session_id, f"ended ({record.end_reason})", action)
        call = self.calls.get(record.session_id)
        if call is None:
            raise SessionConflict(record.session_id, record.state, action)
        try:
            # bounded: a queued session waits at most queue_wait, a launch at most bot_start_timeout
            return await asyncio.wait_for(asyncio.shield(call.launched), self.limits.bot_wait)
        except asyncio.TimeoutError:
            raise SignalingTimeout(record.session_id, self.limits.bot_wait) from None
        except (BotError, AtCapacity, Unplaceable):
            raise
        except Exception as exc:  # noqa: BLE001 - surfaced as a bot failure for this session
            raise BotError(f"bot for session {record.session_id} failed to start: {exc}") from exc
