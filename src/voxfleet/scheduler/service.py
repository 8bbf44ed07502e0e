"""The asyncio service that drives a runtime backend: admission, warm pools, queue, limits.

Decisions come from the pure cores (``capacity.CapacityLedger``, ``pool.WarmPoolPolicy``,
``pool.AdmissionQueue``, ``sessions.SessionRecord``); this module applies them. It reacts to
events (a session starts, a bot exits) and never polls its own state; the one periodic task
samples bots' memory, which the kernel reports only when asked.

Admission, in order, region by region of the session's preference (``placement``): a warm bot
of the agent there (assignment is one message, milliseconds); else a cold start there if the
profile fits on one of its nodes; then the next nearest region. Else, if another agent's warm
bot holds capacity in those regions, that bot is retired and the session waits for its release;
else the bounded queue; else 429 ``AT_CAPACITY`` with Retry-After. A session no node could ever
run (unknown region, profile bigger than every node) is refused at once: 422 ``UNPLACEABLE``.
Every bot, warm or busy, holds a reservation on its node that is released exactly once, when its
process is gone (or its node left the cluster: ``node_lost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from voxfleet.exceptions import (
    AgentNotFound,
    AtCapacity,
    BotError,
    MediaPortsExhausted,
    NotReady,
    SessionConflict,
    SessionNotFound,
    Unplaceable,
)
from voxfleet.observability.metrics import Metrics
from voxfleet.runtime.protocol import Backend, BotHandle
from voxfleet.runtime.streams import RelayStream
from voxfleet.scheduler.capacity import Profile, Resources
from voxfleet.scheduler.placement import ClusterLedger, Node, choose_start
from voxfleet.scheduler.forecast import ArrivalForecaster
from voxfleet.scheduler.pool import AdmissionQueue, WarmPoolPolicy
from voxfleet.scheduler.pool_sizing import PredictiveWarmPoolPolicy
from voxfleet.scheduler.sessions import ACTIVE, ENDED, QUEUED, SessionRecord, SessionTable
from voxfleet.tasks import BackgroundTasks

log = logging.getLogger(__name__)


REFILL_EWMA = 0.3  # weight of the newest warm-up in the measured refill time


@dataclass
class AgentPool:
    """One agent's bots. With a predictive policy the pool is sized from the forecast arrival
    rate (``forecast.ArrivalForecaster``, fed every session start) and the measured refill time;
    with a fixed one from ``min_warm``/``warm_pct`` alone."""

    name: str
    profile: Profile
    policy: WarmPoolPolicy | PredictiveWarmPoolPolicy
    forecaster: ArrivalForecaster = field(default_factory=ArrivalForecaster)
    refill_s: float = 1.0
    warm: list[BotHandle] = field(default_factory=list)
    warming: int = 0
    active: int = 0
    warming_in: dict[str, int] = field(default_factory=dict)  # region -> warm bots starting there
    active_in: dict[str, int] = field(default_factory=dict)  # region -> sessions there

    def warm_in(self, region: str) -> list[BotHandle]:
        return [bot for bot in self.warm if bot.info.region == region]

    def take_warm(self, region: str) -> BotHandle:
        bot = next(bot for bot in self.warm if bot.info.region == region)
        self.warm.remove(bot)
        return bot

    def add_active(self, region: str, delta: int) -> None:
        self.active += delta
        self.active_in[region] = self.active_in.get(region, 0) + delta

    def add_warming(self, region: str, delta: int) -> None:
        self.warming += delta
        self.warming_in[region] = self.warming_in.get(region, 0) + delta

    def target(self, fits_more: int, refill_concurrency: int, now: float, region: str) -> int:
        """The warm-pool target in one region: the policy applied to that region's sessions."""
        have = len(self.warm_in(region)) + self.warming_in.get(region, 0)
        active = self.active_in.get(region, 0)
        if isinstance(self.policy, PredictiveWarmPoolPolicy):
            self.forecaster.begin(now)
            rate = self.forecaster.rate_upper(now, horizon_s=self.refill_s)
            return self.policy.target(active, fits_more, have, forecast_rate=rate,
                                      refill_s=self.refill_s, refill_concurrency=refill_concurrency)
        return self.policy.target(active, fits_more=fits_more, warm=have)

    def record_refill(self, seconds: float) -> None:
        self.refill_s = (1 - REFILL_EWMA) * self.refill_s + REFILL_EWMA * seconds

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {"profile": self.profile.name, "warm": len(self.warm), "warming": self.warming,
                "active": self.active, "policy": type(self.policy).__name__,
                "min_warm": self.policy.min_warm, "warm_pct": self.policy.warm_pct,
                "max_bots": self.policy.max_bots, "refill_s": round(self.refill_s, 3),
                "forecast_per_min": round(self.forecaster.rate(now) * 60, 3),
                "warm_pids": [b.info.pid for b in self.warm],
                "warm_by_region": {r: len(self.warm_in(r)) for r in sorted({b.info.region for b in self.warm})},
                "active_by_region": {r: n for r, n in sorted(self.active_in.items()) if n}}


@dataclass(frozen=True)
class Limits:
    offer_timeout: float = 30.0
    signaling_timeout: float = 15.0
    queue_wait: float = 30.0
    max_session: float = 3600.0
    memory_check: float = 1.0
    refill_concurrency: int = 1


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
    ) -> None:
        self.backend = backend
        self.pools = {p.name: p for p in pools}
        self.agents = list(self.pools)
        self.ledger = ledger
        self.limits = limits
        self.queue = AdmissionQueue(queue_max)
        self.table = SessionTable(keep_ended)
        self.bots: dict[str, asyncio.Future[BotHandle]] = {}  # session_id -> its bot, once started
        self.live_bots: dict[str, BotHandle] = {}  # bot_id -> bot (warm or busy)
        self.queued_bodies: dict[str, Any] = {}
        self.preferences: dict[str, list[str]] = {}  # session_id -> regions to try, nearest first
        self.tasks = BackgroundTasks(log)
        self.accepting = True
        self._sessions_done = asyncio.Event()
        self._recheck: asyncio.Task | None = None
        self.metrics = Metrics()
        self.metrics.watch(self.capacity)
        # Called (synchronously, must not block) whenever a session record changes state.
        self.on_change: Callable[[SessionRecord], None] = lambda record: None
        backend.on_nodes_changed = self.sync_nodes  # a cluster backend reports nodes joining and leaving

    # -- queries ----------------------------------------------------------------------------
    def get(self, session_id: str) -> SessionRecord:
        record = self.table.get(session_id)
        if record is None:
            raise SessionNotFound(session_id)
        if record.state == QUEUED:
            record.queue_position = self.queue.position(session_id)
        return record

    def ready(self) -> bool:
        return self.accepting and self.backend.ready()

    def capacity(self) -> dict[str, Any]:
        return {**self.ledger.snapshot(), "invariant_ok": self.ledger.check(),
                "queue": {"length": len(self.queue), "max": self.queue.max_length,
                          "by_agent": self.queue.by_agent()},
                "agents": {name: pool.status() for name, pool in self.pools.items()},
                "accepting": self.accepting}

    # -- lifecycle --------------------------------------------------------------------------
    def sync_nodes(self) -> None:
        """Take the backend's current nodes (None: a fixed, configured capacity)."""
        nodes = self.backend.nodes()
        if nodes is None:
            return
        added, removed = self.ledger.sync(
            Node(n.node_id, n.region, n.address, Resources(n.cpu_millis, n.mem_mb, n.kbps)) for n in nodes)
        for node in added:
            log.info("node %s joined (region %s, %s, %s)", node.node_id[:12], node.region, node.address,
                     node.capacity.as_dict())
        for node_id in removed:
            log.warning("node %s left; its sessions end (node_lost)", node_id[:12])
        if added or removed:
            self._rebalance()

    def start(self) -> None:
        """Begin filling warm pools and sampling memory (after the backend is ready)."""
        self.tasks.spawn(self._watch_memory(), "memory-watch")
        self._rebalance()

    async def drain(self, timeout: float) -> None:
        """Stop admitting, release warm bots, let sessions finish within `timeout`."""
        self.accepting = False
        for session_id in self.queue.waiting():
            self._expire_queued(session_id, "shutdown", "voxfleet is shutting down")
        for pool in self.pools.values():
            for bot in list(pool.warm):
                self.tasks.spawn(bot.stop("shutdown", grace=1.0), f"retire:{bot.bot_id}")
        if self.table.count():
            log.info("draining: waiting up to %.0fs for %d session(s)", timeout, self.table.count())
            self._sessions_done.clear()
            try:
                await asyncio.wait_for(self._sessions_done.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("drain: %d session(s) still live after %.0fs", self.table.count(), timeout)

    async def aclose(self) -> None:
        self.accepting = False
        await self.tasks.cancel_all()

    # -- commands ---------------------------------------------------------------------------
    async def start_session(self, agent: str, body: Any, transport: str = "webrtc",
                            region: str | None = None) -> SessionRecord:
        if agent not in self.pools:
            raise AgentNotFound(agent, self.agents)
        if not self.ready():
            raise NotReady("voxfleet is not ready to serve sessions (starting or draining)")
        preference = self._placeable(agent, region)
        record = SessionRecord(session_id=str(uuid.uuid4()), agent=agent, transport=transport,
                               region_requested=region)
        self.pools[agent].forecaster.observe(record.created_at)
        self.bots[record.session_id] = asyncio.get_running_loop().create_future()
        self.preferences[record.session_id] = preference
        admitted = self._admit(record, body)
        if not admitted:
            position = self.queue.push(record.session_id, agent)
            if position is None:
                self.bots.pop(record.session_id)
                self.preferences.pop(record.session_id)
                self.metrics.rejected.labels(agent).inc()
                raise AtCapacity(f"all agents are busy and the queue is full ({self.queue.max_length} waiting); "
                                 "try again shortly", retry_after_s=self._retry_after())
            record.state = QUEUED
            record.queue_position = position
            self.queued_bodies[record.session_id] = body
            self.tasks.spawn(self._queue_deadline(record), f"queue-deadline:{record.session_id}")
            log.info("session %s: queued at #%d for agent %s", record.session_id, position, agent)
        self.table.add(record)
        self.on_change(record)
        if admitted:
            self._rebalance()  # it may have taken a warm bot: start the replacement now
        return record

    async def offer(self, session_id: str, request: dict[str, Any]) -> dict[str, Any]:
        record = self.get(session_id)
        bot = await self._bot_for(record, "accept an offer")
        record.mark("offer_received")
        try:
            answer = await bot.offer(request, self.limits.signaling_timeout)
        except MediaPortsExhausted:
            # this session cannot get media ports now: end it so its reservation frees at once
            self.tasks.spawn(bot.stop("media_ports_exhausted"), f"no-ports:{session_id}")
            raise
        if record.activate():
            record.mark("answered")
            self.on_change(record)
        return answer

    async def add_ice_candidates(self, session_id: str, pc_id: str, candidates: list[dict[str, Any]]) -> None:
        record = self.get(session_id)
        bot = await self._bot_for(record, "add ICE candidates")
        await bot.add_ice_candidates(pc_id, candidates, self.limits.signaling_timeout)

    async def open_stream(self, session_id: str, request: dict[str, Any]) -> RelayStream:
        """Connect a media WebSocket (phone call stream, generic WebSocket client) to the
        session's bot; the caller's frames are then relayed through the returned stream."""
        record = self.get(session_id)
        bot = await self._bot_for(record, "open a media stream")
        record.mark("stream_connected")
        stream = await bot.open_stream(request, self.limits.signaling_timeout)
        if record.activate():
            record.mark("answered")
            self.on_change(record)
        return stream

    async def hang_up(self, session_id: str, reason: str = "hangup") -> SessionRecord:
        record = self.get(session_id)
        if record.state == ENDED:
            return record
        if record.state == QUEUED:
            self._expire_queued(session_id, reason, "hung up while queued")
            return record
        launched = self.bots.get(session_id)
        if launched is not None and launched.done() and not launched.exception():
            await launched.result().stop(reason)
        else:
            record.end(reason, "hung up before the bot started")
        return record

    # -- admission --------------------------------------------------------------------------
    def _placeable(self, agent: str, region: str | None) -> list[str]:
        """The regions a session may run in, nearest first; Unplaceable if no node there could
        ever hold the agent's profile (answered now rather than queued forever)."""
        preference = self.ledger.preference(region)
        resources = self.pools[agent].profile.resources
        if not self.ledger.could_ever_fit(resources, preference):
            shown = ", ".join(f"{k} {v}" for k, v in resources.as_dict().items())
            raise Unplaceable(f"agent {agent}: its profile ({shown}) is bigger than every node of region(s) "
                              f"{', '.join(preference) or 'none'}", region=region)
        return preference

    def _admit(self, record: SessionRecord, body: Any) -> bool:
        """Start the session now if possible (warm, else cold, nearest region first); False if
        it must wait."""
        pool = self.pools[record.agent]
        preference = self.preferences[record.session_id]
        warm = {region: len(pool.warm_in(region)) for region in preference}
        fits = ({region: self.ledger.how_many_fit(pool.profile.resources, region) for region in preference}
                if pool.active < pool.policy.max_bots else {})
        choice = choose_start(preference, warm, fits)
        if choice is None:
            if pool.active < pool.policy.max_bots:
                self._retire_one_warm_bot(exclude=record.agent, regions=preference)
            return False
        record.region = choice.region
        if choice.kind == "warm":
            bot = pool.take_warm(choice.region)
            pool.add_active(choice.region, 1)
            self.tasks.spawn(self._serve(record, body, warm_bot=bot), f"session:{record.session_id}")
            return True
        bot_id = uuid.uuid4().hex
        node = self.ledger.reserve(bot_id, pool.profile.resources, [choice.region])
        assert node is not None, "choose_start said it fits"
        pool.add_active(choice.region, 1)
        self.tasks.spawn(self._serve(record, body, bot_id=bot_id, node=node), f"session:{record.session_id}")
        return True

    def _retire_one_warm_bot(self, exclude: str, regions: list[str]) -> None:
        """Free capacity held by another agent's idle warm bot in one of `regions` (its release
        re-runs admission)."""
        for pool in self.pools.values():
            if pool.name == exclude:
                continue
            for region in regions:
                if pool.warm_in(region):
                    bot = pool.take_warm(region)
                    self.tasks.spawn(bot.stop("retired", grace=1.0), f"retire:{bot.bot_id}")
                    return

    async def _serve(self, record: SessionRecord, body: Any, *, warm_bot: BotHandle | None = None,
                     bot_id: str | None = None, node: Node | None = None) -> None:
        pool = self.pools[record.agent]
        launched = self.bots[record.session_id]
        try:
            try:
                if warm_bot is not None:
                    bot = warm_bot
                    await bot.assign(record.session_id, body, self.limits.signaling_timeout)
                else:
                    assert bot_id is not None and node is not None
                    bot = await self.backend.launch(record.agent, bot_id, record.session_id, body,
                                                    node_id=node.node_id)
                    self._watch_bot(bot)
            except Exception as exc:  # noqa: BLE001 - recorded as the session's end
                if bot_id is not None:
                    self._release(bot_id)
                log.error("session %s: bot failed to start: %s", record.session_id, exc)
                launched.set_exception(exc)
                launched.exception()
                record.end("unplaceable" if isinstance(exc, Unplaceable) else "start_failed", str(exc))
                return
            record.warm = warm_bot is not None
            record.pid = bot.info.pid
            record.node, record.region = bot.info.node, bot.info.region
            record.mark("bot_assigned")
            record.bot_start_ms = record.timings_ms["bot_assigned"]
            launched.set_result(bot)
            start_kind = "warm" if record.warm else "cold"
            self.metrics.started.labels(record.agent, start_kind).inc()
            self.metrics.assignment.labels(record.agent, start_kind).observe(record.bot_start_ms / 1000)
            log.info("session %s: %s start in %.1f ms (bot %s pid %s)", record.session_id,
                     "warm" if record.warm else "cold", record.bot_start_ms, bot.bot_id, bot.info.pid)
            if record.state == ENDED:  # hung up while the bot was starting
                await bot.stop(record.end_reason or "hangup")
            await self._run_bot(record, bot)
        finally:
            self._finish(record, pool)

    def _finish(self, record: SessionRecord, pool: AgentPool) -> None:
        record.end("shutdown")  # a no-op unless the task was cancelled before the bot ended
        pool.add_active(record.region or "", -1)
        self.bots.pop(record.session_id, None)
        self.preferences.pop(record.session_id, None)
        self.table.retire(record)
        self.on_change(record)
        if not self.table.count():
            self._sessions_done.set()
        self._rebalance()

    def adopt(self, record: SessionRecord, bot: BotHandle) -> None:
        """Take over a session whose bot outlived a restart of the control plane."""
        pool = self.pools[bot.agent]
        if not self.ledger.reserve(bot.bot_id, pool.profile.resources, [bot.info.region]):
            log.warning("session %s: resumed over capacity (its reservation predates this run)", record.session_id)
        record.node, record.region = bot.info.node, bot.info.region
        pool.add_active(bot.info.region, 1)
        record.mark("resumed")
        self.table.add(record)
        launched = asyncio.get_running_loop().create_future()
        launched.set_result(bot)
        self.bots[record.session_id] = launched
        self._watch_bot(bot)
        self.on_change(record)

        async def serve() -> None:
            try:
                await self._run_bot(record, bot)
            finally:
                self._finish(record, pool)

        self.tasks.spawn(serve(), f"session:{record.session_id}")

    async def _run_bot(self, record: SessionRecord, bot: BotHandle) -> None:
        """From the moment a bot owns the session until it is gone."""
        # the bot's live observations, shown by GET /v1/sessions/{id} while the call runs
        record.turns, record.transcript, record.ttfb_s = bot.info.turns, bot.info.transcript, bot.info.ttfb_s
        record.models = bot.info.model_loads
        deadline = self.tasks.spawn(self._deadlines(record, bot), f"deadlines:{record.session_id}")
        result = await bot.wait_exit()
        deadline.cancel()
        for name, at in bot.info.events.items():
            if at >= record.created_at and name not in record.timings_ms:
                record.mark(name, at)
        record.first_audio_at = record.first_audio_at or bot.info.events.get("first_audio")  # phone: set by the relay
        if bot.stream is not None:
            record.relay_ms = bot.stream.stats()
        if record.end(result.reason, result.detail, result.exit_code, result.signal):
            log.info("session %s: ended (%s) %s", record.session_id, result.reason, result.detail)
        self._observe_latency(record)

    def _observe_latency(self, record: SessionRecord) -> None:
        self.metrics.ended.labels(record.agent, record.end_reason or "unknown").inc()
        ttfw = record.latency_summary()["ttfwMs"]
        if ttfw is not None:
            self.metrics.ttfw.labels(record.agent, "warm" if record.warm else "cold").observe(ttfw / 1000)
        self.metrics.observe_turns(record.agent, record.turns)

    async def _deadlines(self, record: SessionRecord, bot: BotHandle) -> None:
        await asyncio.sleep(self.limits.offer_timeout)
        if record.state not in (ACTIVE, ENDED):
            log.warning("session %s: no offer within %.0fs; ending", record.session_id, self.limits.offer_timeout)
            await bot.stop("timeout")
            return
        await asyncio.sleep(max(0.0, self.limits.max_session - self.limits.offer_timeout))
        log.warning("session %s: reached the %.0fs limit; ending", record.session_id, self.limits.max_session)
        await bot.stop("max_duration")

    async def _queue_deadline(self, record: SessionRecord) -> None:
        await asyncio.sleep(self.limits.queue_wait)
        self._expire_queued(record.session_id, "queue_timeout",
                            f"no capacity within {self.limits.queue_wait:.0f}s")

    def _expire_queued(self, session_id: str, reason: str, detail: str) -> None:
        if not self.queue.remove(session_id):
            return
        self.queued_bodies.pop(session_id, None)
        self.preferences.pop(session_id, None)
        record = self.table.get(session_id)
        launched = self.bots.pop(session_id, None)
        if launched is not None and not launched.done():
            launched.set_exception(AtCapacity(f"all agents are busy: {detail}", retry_after_s=self._retry_after()))
            launched.exception()
        if record is not None:
            record.end(reason, detail)
            self.table.retire(record)
            self.on_change(record)
        if not self.table.count():
            self._sessions_done.set()

    def _retry_after(self) -> int:
        return max(1, min(30, int(self.limits.queue_wait // 2) or 1))

    # -- warm pools ---------------------------------------------------------------------------
    def _rebalance(self) -> None:
        """Admit queued sessions first, then bring warm pools to their targets."""
        while self.accepting and (head := self.queue.head()) is not None:
            session_id, _agent = head
            record = self.table.get(session_id)
            if record is None or not self._admit(record, self.queued_bodies.get(session_id)):
                break
            self.queue.remove(session_id)
            self.queued_bodies.pop(session_id, None)
            record.state = "starting"
            record.queue_position = None
            record.mark("dequeued")
        if not self.accepting or len(self.queue):
            return
        in_flight = sum(p.warming for p in self.pools.values())
        now = time.time()
        for pool in self.pools.values():
            for region in self.ledger.regions():
                have = len(pool.warm_in(region)) + pool.warming_in.get(region, 0)
                fits = self.ledger.how_many_fit(pool.profile.resources, region)
                target = pool.target(fits, self.limits.refill_concurrency, now, region)
                if target > pool.policy.min_warm:
                    self._recheck_later()  # the forecast decays with time, not only with events
                while have < target and in_flight < self.limits.refill_concurrency:
                    bot_id = uuid.uuid4().hex
                    node = self.ledger.reserve(bot_id, pool.profile.resources, [region])
                    if node is None:
                        break
                    pool.add_warming(region, 1)
                    have += 1
                    in_flight += 1
                    self.tasks.spawn(self._warm_one(pool, bot_id, node), f"warm:{bot_id}")
                while have > target and pool.warm_in(region):
                    bot = pool.take_warm(region)
                    have -= 1
                    self.tasks.spawn(bot.stop("retired", grace=1.0), f"retire:{bot.bot_id}")

    def _recheck_later(self, delay: float = 5.0) -> None:
        if self._recheck is None or self._recheck.done():
            async def recheck() -> None:
                await asyncio.sleep(delay)
                self._rebalance()

            self._recheck = self.tasks.spawn(recheck(), "pool-recheck")

    async def _warm_one(self, pool: AgentPool, bot_id: str, node: Node) -> None:
        started = time.monotonic()
        try:
            bot = await self.backend.launch(pool.name, bot_id, node_id=node.node_id)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up frees its reservation and is logged
            log.error("agent %s: warm bot failed to start: %s", pool.name, exc)
            self._release(bot_id)
            pool.add_warming(node.region, -1)
            return
        pool.add_warming(node.region, -1)
        pool.record_refill(time.monotonic() - started)
        self._watch_bot(bot)
        if self.accepting:
            pool.warm.append(bot)
            log.info("agent %s: warm bot %s ready (pid %s, warm-up %s ms)", pool.name, bot_id[:8],
                     bot.info.pid, bot.info.warmup_ms)
        else:
            await bot.stop("shutdown", grace=1.0)
        self._rebalance()

    def _watch_bot(self, bot: BotHandle) -> None:
        self.live_bots[bot.bot_id] = bot
        self.tasks.spawn(self._release_on_exit(bot), f"release:{bot.bot_id}")

    async def _release_on_exit(self, bot: BotHandle) -> None:
        result = await bot.wait_exit()
        self.live_bots.pop(bot.bot_id, None)
        pool = self.pools[bot.agent]
        if bot in pool.warm:  # died while idle
            pool.warm.remove(bot)
            log.warning("agent %s: warm bot %s ended while idle (%s)", bot.agent, bot.bot_id[:8], result.reason)
        self._release(bot.bot_id)
        self._rebalance()

    def _release(self, bot_id: str) -> None:
        self.ledger.release(bot_id)
        assert self.ledger.check(), "capacity invariant broken"

    # -- limits -------------------------------------------------------------------------------
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
                    self.tasks.spawn(bot.stop("memory_limit", grace=0.5), f"memory-limit:{bot.bot_id}")

    # -- internals --------------------------------------------------------------------------
    async def _bot_for(self, record: SessionRecord, action: str) -> BotHandle:
        if record.state == ENDED:
            raise SessionConflict(record.session_id, f"ended ({record.end_reason})", action)
        launched = self.bots.get(record.session_id)
        if launched is None:
            raise SessionConflict(record.session_id, record.state, action)
        try:
            return await asyncio.shield(launched)
        except (BotError, AtCapacity, Unplaceable):
            raise
        except Exception as exc:  # noqa: BLE001 - surfaced as a bot failure for this session
            raise BotError(f"bot for session {record.session_id} failed to start: {exc}") from exc

