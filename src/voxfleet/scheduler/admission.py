"""The admission core: which session gets which bot, and which bots to warm (sans-I/O).

In the manner of a sans-I/O protocol: events go in as method calls (a session start is
requested, a bot is ready, a launch failed, a bot exited, a queue wait ran out, the nodes
changed, time passed), and each returns the commands the caller must carry out (``Launch``,
``Assign``, ``Stop``, ``Enqueue``, ``Dequeue``, ``Expire``, ``Reject``). Nothing here awaits,
sleeps, reads a clock or touches a process: time is passed in. ``scheduler.service`` drives it
with real bots; ``sim.engine`` drives the very same object on a virtual clock.

Admission, in order, region by region of the session's preference (``placement``): a warm bot
of the agent there (assignment is one message, milliseconds); else a cold start there if the
profile fits on one of its nodes (and the agent is under ``max_bots``); then the next nearest
region. Else, if another agent's warm bot holds capacity in those regions, that bot is retired
and the session waits for its release; else the bounded queue; else ``Reject`` (429
``AT_CAPACITY`` with Retry-After). A session no node could ever run (unknown region, profile
bigger than every node) is refused at once: ``Unplaceable``.

Every bot, from the moment it is launched until it exits, holds one reservation in the
:class:`~voxfleet.scheduler.placement.ClusterLedger`, keyed by its id and released exactly once:
when the caller reports the bot gone (``bot_exited``) or never started (``launch_failed``).
After every event the queue is served first, then each pool is brought to its policy's target.
A pool whose warm launch failed is not refilled again before a backoff (0.5 s doubling to 30 s,
reset by its next ready bot): a template that is down must not turn refills into a tight loop of
failing launches. Cold starts are not held back by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import AgentNotFound, AtCapacity, ClientLimited, NotReady, Unplaceable
from voxfleet.scheduler.capacity import Profile
from voxfleet.scheduler.forecast import ArrivalForecaster
from voxfleet.scheduler.placement import ClusterLedger, Node, choose_start
from voxfleet.scheduler.pool import AdmissionQueue, PoolPolicy, PoolState

REFILL_EWMA = 0.3  # weight of the newest warm-up in the measured refill time
REFILL_BACKOFF_S = 0.5  # wait before refilling after a failed warm launch; doubles per failure in a row
REFILL_BACKOFF_MAX_S = 30.0

BotState = Literal["warming", "warm", "busy", "stopping"]


# -- commands ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """Start bot ``bot_id`` of ``agent`` on node ``node_id``: warm (``session_id`` None), or
    cold for ``session_id`` with its start ``body``. Report ``bot_ready``/``launch_failed``."""

    bot_id: str
    agent: str
    node_id: str
    region: str
    session_id: str | None = None
    body: Any = None


@dataclass(frozen=True)
class Assign:
    """Hand warm bot ``bot_id`` its session (report ``assign_failed`` if that fails)."""

    bot_id: str
    session_id: str
    body: Any = None


@dataclass(frozen=True)
class Stop:
    """Ask bot ``bot_id`` to end (``reason``), killing it after ``grace`` seconds."""

    bot_id: str
    reason: EndReason
    grace: float = 1.0


@dataclass(frozen=True)
class Enqueue:
    """The session waits at ``position``; report ``queue_timeout`` after the queue's wait bound."""

    session_id: str
    position: int


@dataclass(frozen=True)
class Dequeue:
    """The queued session leaves the queue; its ``Launch`` or ``Assign`` follows."""

    session_id: str


@dataclass(frozen=True)
class Expire:
    """The queued session ends without a bot (``reason``: queue_timeout, shutdown, hangup...)."""

    session_id: str
    reason: EndReason
    detail: str
    retry_after_s: int


@dataclass(frozen=True)
class Reject:
    """The session cannot start nor wait: answer ``error`` (429 with Retry-After)."""

    session_id: str
    error: AtCapacity


Command = Launch | Assign | Stop | Enqueue | Dequeue | Expire | Reject


# -- state -------------------------------------------------------------------------------------
@dataclass
class Bot:
    bot_id: str
    agent: str
    region: str
    state: BotState
    session_id: str | None = None


@dataclass
class Session:
    """One session admission knows of: queued, or holding a bot until that bot is gone."""

    session_id: str
    agent: str
    preference: list[str]  # regions to try, nearest first
    body: Any = None
    bot_id: str | None = None  # None while queued
    region: str | None = None
    client: str | None = None  # who asked (an API key, else a source address); None: not bounded


@dataclass
class AgentPool:
    """One agent's bots and its warm-pool policy. ``forecaster`` feeds the status shown to
    operators (the forecast policy keeps its own); ``refill_s`` is the measured warm-up time."""

    name: str
    profile: Profile
    policy: PoolPolicy
    max_bots: int = 1000
    forecaster: ArrivalForecaster = field(default_factory=ArrivalForecaster)
    refill_s: float = 1.0
    warm_by_region: dict[str, list[Bot]] = field(default_factory=dict)  # idle bots, oldest first
    warming_in: dict[str, int] = field(default_factory=dict)  # region -> warm bots starting there
    active_in: dict[str, int] = field(default_factory=dict)  # region -> sessions there
    launch_failures: int = 0  # warm launches failed in a row (reset by a ready bot)
    refill_retry_at: float = 0.0  # no warm launch before this time

    @property
    def warm(self) -> list[Bot]:
        return [bot for bots in self.warm_by_region.values() for bot in bots]

    @property
    def active(self) -> int:
        return sum(self.active_in.values())

    @property
    def warming(self) -> int:
        return sum(self.warming_in.values())

    def warm_in(self, region: str) -> list[Bot]:
        return self.warm_by_region.get(region, [])

    def add_warm(self, bot: Bot) -> None:
        self.warm_by_region.setdefault(bot.region, []).append(bot)

    def take_warm(self, region: str) -> Bot:
        return self.warm_by_region[region].pop(0)

    def drop_warm(self, bot: Bot) -> bool:
        """Forget an idle bot (it exited); False if it was not idle."""
        bots = self.warm_by_region.get(bot.region, [])
        if bot not in bots:
            return False
        bots.remove(bot)
        return True

    def add_active(self, region: str, delta: int) -> None:
        self.active_in[region] = self.active_in.get(region, 0) + delta

    def add_warming(self, region: str, delta: int) -> None:
        self.warming_in[region] = self.warming_in.get(region, 0) + delta

    def record_refill(self, seconds: float) -> None:
        self.refill_s = (1 - REFILL_EWMA) * self.refill_s + REFILL_EWMA * seconds

    def record_launch_failure(self, now: float) -> None:
        """A warm launch failed: hold refills for the backoff."""
        self.launch_failures += 1
        self.refill_retry_at = now + refill_backoff(self.launch_failures)

    def reset_backoff(self) -> None:
        self.launch_failures, self.refill_retry_at = 0, 0.0

    def may_refill(self, now: float) -> bool:
        return now >= self.refill_retry_at

    def status(self, now: float, pid_of: Callable[[str], int | None]) -> dict[str, Any]:
        describe = getattr(self.policy, "describe", None)
        policy = describe() if describe is not None else {"policy": self.policy.name}
        return {"profile": self.profile.name, "warm": len(self.warm), "warming": self.warming,
                "active": self.active, **policy, "max_bots": self.max_bots,
                "refill_s": round(self.refill_s, 3),
                "forecast_per_min": round(self.forecaster.rate(now) * 60, 3),
                "warm_pids": [pid_of(b.bot_id) for b in self.warm],
                "warm_by_region": {r: len(self.warm_in(r)) for r in sorted({b.region for b in self.warm})},
                "active_by_region": {r: n for r, n in sorted(self.active_in.items()) if n},
                "launch_failures": self.launch_failures,
                "refill_retry_at": None if self.may_refill(now) else self.refill_retry_at}


def refill_backoff(failures: int) -> float:
    """Seconds a pool waits to refill after ``failures`` failed warm launches in a row."""
    return min(REFILL_BACKOFF_MAX_S, REFILL_BACKOFF_S * 2.0 ** min(max(failures - 1, 0), 16))


# -- the core ----------------------------------------------------------------------------------
class Admission:
    """Sessions, bots and reservations of every agent; see the module docstring."""

    def __init__(self, pools: Iterable[AgentPool], ledger: ClusterLedger, *, queue_max: int,
                 queue_wait_s: float, refill_concurrency: int | None = 1,
                 client_share: float = 1.0, new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
                 audit: bool = True) -> None:
        if not 0.0 < client_share <= 1.0:
            raise ValueError(f"client_share must be in (0, 1] (got {client_share!r})")
        self.pools = {p.name: p for p in pools}
        self.ledger = ledger
        self.queue = AdmissionQueue(queue_max)
        self.queue_wait_s = queue_wait_s
        self.refill_concurrency = refill_concurrency
        self.client_share = client_share  # most of an agent's capacity, and of the queue, one client holds
        self.new_id = new_id
        self.audit = audit  # check the whole ledger after every release (off in long simulations)
        self.sessions: dict[str, Session] = {}
        self.bots: dict[str, Bot] = {}
        self.accepting = True

    # -- queries --------------------------------------------------------------------------------
    def queue_position(self, session_id: str) -> int | None:
        return self.queue.position(session_id)

    def retry_after(self) -> int:
        return max(1, min(30, int(self.queue_wait_s // 2) or 1))

    def bot_of(self, session_id: str) -> str | None:
        session = self.sessions.get(session_id)
        return None if session is None else session.bot_id

    def snapshot(self, now: float, pid_of: Callable[[str], int | None]) -> dict[str, Any]:
        return {**self.ledger.snapshot(), "invariant_ok": self.ledger.check(),
                "queue": {"length": len(self.queue), "max": self.queue.max_length,
                          "by_agent": self.queue.by_agent()},
                "agents": {name: pool.status(now, pid_of) for name, pool in self.pools.items()},
                "accepting": self.accepting}

    # -- events -----------------------------------------------------------------------------------
    def start_requested(self, session_id: str, agent: str, body: Any, region: str | None,
                        now: float, client: str | None = None, queue: bool = True) -> list[Command]:
        """A session asks to start. Raises AgentNotFound, NotReady (draining) or Unplaceable;
        otherwise the session is admitted (Launch/Assign), queued (Enqueue) or rejected (Reject:
        no room in the queue, or ``client`` already holds its share of capacity or queue).
        ``queue=False``: a session that cannot be admitted now is rejected, never queued (an
        outbound call is dialled only once its bot is reserved)."""
        if agent not in self.pools:
            raise AgentNotFound(agent, list(self.pools))
        if not self.accepting:
            raise NotReady("voxfleet is not ready to serve sessions (starting or draining)")
        pool = self.pools[agent]
        preference = self._placeable(pool, region)
        pool.forecaster.observe(now)
        pool.policy.on_arrival(now)
        over = self._over_share(pool, client)
        if over is not None:
            return [Reject(session_id, ClientLimited(over, retry_after_s=self.retry_after(), code="CLIENT_SHARE"))]
        session = Session(session_id, agent, preference, body, client=client)
        self.sessions[session_id] = session
        commands: list[Command] = []
        if self._admit(session, commands):
            return commands + self._rebalance(now)  # it may have taken a warm bot: refill now
        if not queue:
            del self.sessions[session_id]
            return commands + [Reject(session_id, AtCapacity(
                f"no capacity for a session of agent {agent} now (it would have to queue); nothing was started",
                retry_after_s=self.retry_after()))]
        queued = sum(1 for s in self.sessions.values() if s.client == client and s.bot_id is None) - 1
        if client is not None and queued >= self.share_of(self.queue.max_length):
            del self.sessions[session_id]
            return commands + [Reject(session_id, ClientLimited(
                f"client {client} already has {queued} session(s) waiting, its share of the queue "
                f"({self.client_share:.0%} of {self.queue.max_length})", self.retry_after(), "CLIENT_SHARE"))]
        position = self.queue.push(session_id, agent)
        if position is None:
            del self.sessions[session_id]
            return commands + [Reject(session_id, AtCapacity(
                f"all agents are busy and the queue is full ({self.queue.max_length} waiting); try again shortly",
                retry_after_s=self.retry_after()))]
        return commands + [Enqueue(session_id, position)]

    def bot_ready(self, bot_id: str, now: float, warmup_s: float) -> list[Command]:
        """A warm bot launched by ``Launch`` (no session) is ready, after ``warmup_s``."""
        bot = self.bots[bot_id]
        pool = self.pools[bot.agent]
        pool.add_warming(bot.region, -1)
        pool.record_refill(warmup_s)
        pool.reset_backoff()
        if not self.accepting:
            bot.state = "stopping"
            return [Stop(bot_id, EndReason.SHUTDOWN)]
        bot.state = "warm"
        pool.add_warm(bot)
        return self._rebalance(now)

    def launch_failed(self, bot_id: str, now: float) -> list[Command]:
        """A ``Launch`` did not give a bot: its reservation is released; a cold start's session
        is over (the caller records why); a warm one's pool is not refilled before its backoff."""
        bot = self.bots.pop(bot_id)
        self._release(bot_id)
        pool = self.pools[bot.agent]
        if bot.state == "warming":
            pool.add_warming(bot.region, -1)
            pool.record_launch_failure(now)
        self._session_over(bot)
        return self._rebalance(now)

    def assign_failed(self, session_id: str, now: float) -> list[Command]:
        """An ``Assign`` failed: the session is over and its bot is stopped."""
        session = self.sessions.get(session_id)
        if session is None or session.bot_id is None:
            return []
        bot = self.bots.get(session.bot_id)
        if bot is None:
            return []
        self._session_over(bot)
        bot.state = "stopping"
        return [Stop(bot.bot_id, EndReason.START_FAILED)] + self._rebalance(now)

    def bot_exited(self, bot_id: str, now: float) -> list[Command]:
        """A bot's process is gone (whatever the reason): release its reservation; its session,
        if it had one, is over."""
        bot = self.bots.pop(bot_id, None)
        if bot is None:
            return []
        self._release(bot_id)
        pool = self.pools[bot.agent]
        if bot.state == "warm":  # died while idle
            pool.drop_warm(bot)
        elif bot.state == "warming":
            pool.add_warming(bot.region, -1)
        self._session_over(bot)
        return self._rebalance(now)

    def queue_timeout(self, session_id: str, now: float) -> list[Command]:
        return self.leave_queue(session_id, EndReason.QUEUE_TIMEOUT, f"no capacity within {self.queue_wait_s:.0f}s", now)

    def leave_queue(self, session_id: str, reason: EndReason, detail: str, now: float) -> list[Command]:
        """A queued session leaves without a bot (hung up, timed out); nothing if not queued."""
        if not self.queue.remove(session_id):
            return []
        del self.sessions[session_id]
        return [Expire(session_id, reason, detail, self.retry_after())] + self._rebalance(now)

    def adopt(self, session_id: str, bot_id: str, agent: str, region: str) -> bool:
        """Take over a live session whose bot outlived a restart of the control plane. False if
        its reservation no longer fits (it runs over capacity until it ends)."""
        pool = self.pools[agent]
        reserved = self.ledger.reserve(bot_id, pool.profile.resources, [region]) is not None
        self.bots[bot_id] = Bot(bot_id, agent, region, "busy", session_id)
        self.sessions[session_id] = Session(session_id, agent, [region], None, bot_id, region)
        pool.add_active(region, 1)
        return reserved

    def nodes_changed(self, nodes: Iterable[Node], now: float) -> tuple[list[Node], list[str], list[Command]]:
        """The cluster's nodes are now ``nodes``: (added, removed node ids, commands)."""
        added, removed = self.ledger.sync(nodes)
        return added, removed, (self._rebalance(now) if added or removed else [])

    def tick(self, now: float) -> list[Command]:
        """Time passed: a forecast decays with time, not only with events, and a refill backoff ends."""
        return self._rebalance(now)

    def drain(self) -> list[Command]:
        """Stop admitting: every queued session expires, every warm bot is stopped."""
        self.accepting = False
        commands: list[Command] = []
        for session_id in self.queue.waiting():
            self.queue.remove(session_id)
            del self.sessions[session_id]
            commands.append(Expire(session_id, EndReason.SHUTDOWN, "voxfleet is shutting down", self.retry_after()))
        for pool in self.pools.values():
            for bot in pool.warm:
                bot.state = "stopping"
                commands.append(Stop(bot.bot_id, EndReason.SHUTDOWN))
            pool.warm_by_region.clear()
        return commands

    # -- internals ------------------------------------------------------------------------------
    def share_of(self, total: int) -> int:
        """The most of ``total`` one client may hold: ``client_share`` of it, at least one."""
        return max(1, int(total * self.client_share + 1e-9))

    def _over_share(self, pool: AgentPool, client: str | None) -> str | None:
        """Why ``client`` may not start another session of ``pool`` (None: it may)."""
        if client is None or self.client_share >= 1.0:
            return None
        room = min(pool.max_bots, self.ledger.how_many_fit_empty(pool.profile.resources))
        held = sum(1 for s in self.sessions.values() if s.client == client and s.agent == pool.name and s.bot_id)
        if held < self.share_of(room):
            return None
        return (f"client {client} already holds {held} session(s) of agent {pool.name}, its share of capacity "
                f"({self.client_share:.0%} of {room})")

    def _placeable(self, pool: AgentPool, region: str | None) -> list[str]:
        """The regions a session may run in, nearest first; Unplaceable if no node there could
        ever hold the agent's profile (answered now rather than queued forever)."""
        preference = self.ledger.preference(region)
        resources = pool.profile.resources
        if not self.ledger.could_ever_fit(resources, preference):
            shown = ", ".join(f"{k} {v}" for k, v in resources.as_dict().items())
            raise Unplaceable(f"agent {pool.name}: its profile ({shown}) is bigger than every node of region(s) "
                              f"{', '.join(preference) or 'none'}", region=region)
        return preference

    def _admit(self, session: Session, commands: list[Command]) -> bool:
        """Start the session now if possible (warm, else cold, nearest region first); False if
        it must wait (after retiring another agent's idle bot for it, if one holds room)."""
        pool = self.pools[session.agent]
        under_max = pool.active < pool.max_bots
        warm = {region: len(pool.warm_in(region)) for region in session.preference}
        fits = ({region: self.ledger.how_many_fit(pool.profile.resources, region) for region in session.preference}
                if under_max else {})
        choice = choose_start(session.preference, warm, fits)
        if choice is None:
            if under_max:
                commands.extend(self._retire_one_warm_bot(session.agent, session.preference))
            return False
        session.region = choice.region
        if choice.kind == "warm":
            bot = pool.take_warm(choice.region)
            bot.state, bot.session_id = "busy", session.session_id
            commands.append(Assign(bot.bot_id, session.session_id, session.body))
        else:
            bot_id = self.new_id()
            node = self.ledger.reserve(bot_id, pool.profile.resources, [choice.region])
            assert node is not None, "choose_start said it fits"
            bot = Bot(bot_id, pool.name, node.region, "busy", session.session_id)
            self.bots[bot_id] = bot
            commands.append(Launch(bot_id, pool.name, node.node_id, node.region, session.session_id, session.body))
        session.bot_id = bot.bot_id
        session.body = None  # handed over; not kept for the session's life
        pool.add_active(choice.region, 1)
        return True

    def _retire_one_warm_bot(self, exclude: str, regions: list[str]) -> list[Command]:
        """Free capacity held by another agent's idle warm bot in one of ``regions`` (its exit
        re-runs admission)."""
        for pool in self.pools.values():
            if pool.name == exclude:
                continue
            for region in regions:
                if pool.warm_in(region):
                    bot = pool.take_warm(region)
                    bot.state = "stopping"
                    return [Stop(bot.bot_id, EndReason.RETIRED)]
        return []

    def _session_over(self, bot: Bot) -> None:
        """The session ``bot`` served (if any, and if it still counts it) is over."""
        session = self.sessions.get(bot.session_id or "")
        if session is None or session.bot_id != bot.bot_id:
            return
        del self.sessions[session.session_id]
        self.pools[bot.agent].add_active(session.region or bot.region, -1)
        bot.session_id = None

    def _release(self, bot_id: str) -> None:
        self.ledger.release(bot_id)
        if self.audit:
            assert self.ledger.check(), "capacity invariant broken"

    def _rebalance(self, now: float) -> list[Command]:
        """Admit queued sessions first, then (nobody waiting) bring warm pools to their targets."""
        commands: list[Command] = []
        while self.accepting and (head := self.queue.head()) is not None:
            session = self.sessions[head[0]]
            admitted: list[Command] = []
            if not self._admit(session, admitted):
                commands.extend(admitted)
                break
            self.queue.remove(session.session_id)
            commands.append(Dequeue(session.session_id))
            commands.extend(admitted)
        # The head waits for capacity (or its agent's max_bots); one behind it whose own agent
        # has an idle warm bot takes that bot: the head could not use it, and nobody waits
        # while a warm bot of its agent idles.
        for session_id in list(self.queue.waiting()) if self.accepting else []:
            session = self.sessions[session_id]
            if any(self.pools[session.agent].warm_in(r) for r in session.preference):
                admitted = []
                if self._admit(session, admitted):
                    self.queue.remove(session_id)
                    commands.append(Dequeue(session_id))
                commands.extend(admitted)
        if not self.accepting or len(self.queue):
            return commands
        limit = self.refill_concurrency
        in_flight = sum(p.warming for p in self.pools.values())
        for pool in self.pools.values():
            for region in self.ledger.regions():
                warm = len(pool.warm_in(region))
                warming = pool.warming_in.get(region, 0)
                have = warm + warming
                free = self.ledger.how_many_fit(pool.profile.resources, region)
                state = PoolState(now, pool.active_in.get(region, 0), warm, warming, 0, free, pool.refill_s, limit)
                target = max(0, int(pool.policy.target(state)))
                while have < target and pool.may_refill(now) and (limit is None or in_flight < limit):
                    bot_id = self.new_id()
                    node = self.ledger.reserve(bot_id, pool.profile.resources, [region])
                    if node is None:
                        break
                    self.bots[bot_id] = Bot(bot_id, pool.name, region, "warming")
                    pool.add_warming(region, 1)
                    have += 1
                    in_flight += 1
                    commands.append(Launch(bot_id, pool.name, node.node_id, region))
                while have > target and pool.warm_in(region):
                    bot = pool.take_warm(region)
                    bot.state = "stopping"
                    have -= 1
                    commands.append(Stop(bot.bot_id, EndReason.RETIRED))
        return commands
