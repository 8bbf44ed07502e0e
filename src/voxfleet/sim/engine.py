"""A discrete-event simulation of one node's warm pool under a trace (pure, deterministic).

The node has room for ``capacity`` bots at once. Every bot holds one slot for its whole life,
whether it is *warming* (being initialised), *warm* (ready and idle) or *active* (serving a
session, including a session that is still cold-starting). So at every moment

    active + warm + warming <= capacity,

which the engine checks after every event (and lets a test observe).

What happens is what the server does: the engine drives the server's own admission core
(:class:`voxfleet.scheduler.admission.Admission`) with one agent on one node of ``capacity``
slots, on a virtual clock, standing in only for the bots:

- a bot asked for (warm, or cold for a session) is ready ``refill_s`` after the request, at
  most ``refill_concurrency`` warm-ups at a time (None: no limit, as in a cloud);
- a session runs for its length from the moment its bot is ready; then its bot exits;
- a retired bot exits at once;
- the queue is unbounded and never times out (a simulated caller waits).

A session counts as a warm start if it found a warm bot on arrival; otherwise (cold-started at
once, or queued first) as a cold start. The policy is consulted after every event and every
``tick_s`` of quiet (a forecast decays with time).

Randomness lives in the trace; the engine itself is deterministic, so one trace and one policy
always give the same result.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voxfleet.scheduler.admission import (
    AgentPool, Admission, Assign, Command, Dequeue, Enqueue, Expire, Launch, Reject, Stop,
)
from voxfleet.scheduler.capacity import Profile, Resources
from voxfleet.scheduler.placement import ClusterLedger, Node
from voxfleet.scheduler.pool import PoolPolicy, PoolState
from voxfleet.sim.traces import Trace

__all__ = ["CapacityViolation", "PoolState", "RunResult", "SimPolicy", "TimelinePoint", "percentile", "simulate"]

_AGENT = "sim"
_REGION = "sim"
_SLOT = Resources(1, 1, 1)  # every bot holds one slot


class SimPolicy(PoolPolicy, Protocol):
    """A warm-pool policy under simulation, with the timing of the bots it stands for:
    ``refill_s``, seconds for a new bot (warm or cold-started) to be ready;
    ``refill_concurrency``, warm-ups at once (None: no limit)."""

    refill_s: float
    refill_concurrency: int | None


@dataclass(frozen=True)
class TimelinePoint:
    t: float
    active: int
    warm: int
    warming: int
    queued: int


@dataclass
class RunResult:
    """The outcome of one policy on one trace."""

    trace: str
    policy: str
    capacity: int
    hours: float
    sessions: int = 0
    warm_starts: int = 0
    cold_starts: int = 0  # found no warm bot: cold-started at once or queued first
    queued: int = 0
    waits_s: list[float] = field(default_factory=list, repr=False)
    idle_bot_seconds: float = 0.0
    peak_reserved: int = 0
    bots_warmed: int = 0
    bots_retired: int = 0
    timeline: list[TimelinePoint] = field(default_factory=list, repr=False)

    @property
    def cold_start_pct(self) -> float:
        return 100.0 * self.cold_starts / self.sessions if self.sessions else 0.0

    @property
    def queued_pct(self) -> float:
        return 100.0 * self.queued / self.sessions if self.sessions else 0.0

    @property
    def p95_wait_s(self) -> float:
        return percentile(self.waits_s, 95.0)

    @property
    def mean_idle_bots(self) -> float:
        seconds = self.hours * 3600.0
        return self.idle_bot_seconds / seconds if seconds > 0 else 0.0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


class CapacityViolation(AssertionError):
    """The engine broke ``active + warm + warming <= capacity`` (a bug, never expected)."""


class _Run:
    """One simulation's mutable state; :func:`simulate` is the entry point."""

    def __init__(self, trace: Trace, policy: SimPolicy, capacity: int, tick_s: float,
                 timeline_step_s: float | None, observer: Callable[[PoolState], None] | None) -> None:
        self.trace, self.policy, self.capacity = trace, policy, capacity
        self.tick_s, self.timeline_step_s, self.observer = tick_s, timeline_step_s, observer
        ids = iter(range(1, 1 << 62))
        self.pool = AgentPool(_AGENT, Profile("slot", _SLOT), policy, max_bots=capacity, refill_s=policy.refill_s)
        ledger = ClusterLedger([Node("node", _REGION, "", _SLOT.times(capacity))])
        self.core = Admission([self.pool], ledger, queue_max=1 << 62, queue_wait_s=math.inf,
                              refill_concurrency=policy.refill_concurrency, new_id=lambda: f"b{next(ids)}",
                              audit=False)  # the counts are checked after every event instead
        self.events: list[tuple[float, int, str]] = []  # (time, sequence, bot id ending or ready)
        self.ready_at: set[str] = set()  # warm-ups in flight (their event is "ready")
        self.arrived_at: dict[str, float] = {}
        self.lengths: dict[str, float] = {}
        self.sequence = 0
        self.now = trace.start_s
        self.next_sample = trace.start_s
        self.result = RunResult(trace.name, policy.name, capacity, trace.hours)

    # -- bookkeeping -----------------------------------------------------------------------
    def _schedule(self, at: float, bot_id: str) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, bot_id))

    def _advance(self, t: float) -> None:
        """Move the clock to ``t``, integrating idle warm bots and sampling the timeline."""
        if self.timeline_step_s is not None:
            while self.next_sample <= t:
                state = self.state()
                self.result.timeline.append(
                    TimelinePoint(self.next_sample, state.active, state.warm, state.warming, state.queued))
                self.next_sample += self.timeline_step_s
        self.result.idle_bot_seconds += len(self.pool.warm_in(_REGION)) * (t - self.now)
        self.now = t

    def state(self) -> PoolState:
        pool = self.pool
        return PoolState(self.now, pool.active, len(pool.warm_in(_REGION)), pool.warming, len(self.core.queue),
                         self.core.ledger.how_many_fit(_SLOT), pool.refill_s, self.policy.refill_concurrency)

    def _check(self) -> None:
        state = self.state()
        if (state.reserved > self.capacity or len(self.core.ledger) != state.reserved
                or min(state.active, state.warm, state.warming) < 0):
            raise CapacityViolation(
                f"t={self.now:.3f}: active {state.active} + warm {state.warm} + warming {state.warming} "
                f"> capacity {self.capacity} (policy {self.policy.name})")
        if state.queued and state.warm:
            raise CapacityViolation(f"t={self.now:.3f}: {state.warm} warm bots idle while sessions queue")
        self.result.peak_reserved = max(self.result.peak_reserved, state.reserved)
        if self.observer is not None:
            self.observer(state)

    # -- the bots the core asks for ---------------------------------------------------------------
    def apply(self, commands: list[Command]) -> None:
        pending = list(commands)
        while pending:
            command = pending.pop(0)
            if isinstance(command, Launch) and command.session_id is None:
                self.result.bots_warmed += 1
                self.ready_at.add(command.bot_id)
                self._schedule(self.now + self.policy.refill_s, command.bot_id)
            elif isinstance(command, Launch):
                self._begin(command.session_id, command.bot_id, self.policy.refill_s)
            elif isinstance(command, Assign):
                self._begin(command.session_id, command.bot_id, 0.0)
            elif isinstance(command, Stop):
                self.result.bots_retired += command.reason == "retired"
                pending.extend(self.core.bot_exited(command.bot_id, self.now))
            elif isinstance(command, Enqueue):
                self.result.queued += 1
            elif isinstance(command, (Expire, Reject)):
                raise CapacityViolation(f"t={self.now:.3f}: session {command.session_id} refused ({command})")
            else:
                assert isinstance(command, Dequeue)

    def _begin(self, session_id: str | None, bot_id: str, ready_in: float) -> None:
        """The session's bot is ready after ``ready_in``; then the session runs its length."""
        assert session_id is not None
        self.result.waits_s.append(self.now - self.arrived_at.pop(session_id) + ready_in)
        self._schedule(self.now + ready_in + self.lengths.pop(session_id), bot_id)

    # -- events -------------------------------------------------------------------------------------
    def arrive(self, length: float) -> None:
        self.result.sessions += 1
        session_id = f"s{self.result.sessions}"
        self.arrived_at[session_id], self.lengths[session_id] = self.now, length
        commands = self.core.start_requested(session_id, _AGENT, None, None, self.now)
        warm = any(isinstance(c, Assign) and c.session_id == session_id for c in commands)
        if warm:
            self.result.warm_starts += 1
        else:
            self.result.cold_starts += 1
        self.apply(commands)

    def bot_event(self, bot_id: str) -> None:
        if bot_id in self.ready_at:
            self.ready_at.discard(bot_id)
            self.apply(self.core.bot_ready(bot_id, self.now, self.policy.refill_s))
        else:  # its session ended: one process per session
            self.apply(self.core.bot_exited(bot_id, self.now))

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        arrivals, lengths = self.trace.arrivals, self.trace.durations
        end = self.trace.end_s
        index, count = 0, len(arrivals)
        next_tick = self.now
        while True:
            t_event = self.events[0][0] if self.events else math.inf
            t_arrival = arrivals[index] if index < count else math.inf
            t = min(t_event, t_arrival, next_tick)
            if t >= end:
                break
            self._advance(t)
            if t_event == t:
                _, _, bot_id = heapq.heappop(self.events)
                self.bot_event(bot_id)
            elif t_arrival == t:
                self.arrive(lengths[index])
                index += 1
            else:
                next_tick = t + self.tick_s
                self.apply(self.core.tick(self.now))
            self._check()
        self._advance(end)
        return self.result


def simulate(trace: Trace, policy: SimPolicy, *, capacity: int, tick_s: float = 5.0,
             timeline_step_s: float | None = None,
             observer: Callable[[PoolState], None] | None = None) -> RunResult:
    """Run ``policy`` over ``trace`` on a node with room for ``capacity`` bots.

    ``tick_s``: the policy is also consulted after this long without events (a forecast decays
    with time); ``timeline_step_s``: sample the state this often for plots (None: no samples);
    ``observer``: called with the state after every event (tests check invariants with it).
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1 (got {capacity!r})")
    if not tick_s > 0:
        raise ValueError(f"tick_s must be > 0 (got {tick_s!r})")
    if timeline_step_s is not None and not timeline_step_s > 0:
        raise ValueError(f"timeline_step_s must be > 0 (got {timeline_step_s!r})")
    if policy.refill_s < 0:
        raise ValueError(f"policy {policy.name}: refill_s must be >= 0 (got {policy.refill_s!r})")
    if policy.refill_concurrency is not None and policy.refill_concurrency < 1:
        raise ValueError(f"policy {policy.name}: refill_concurrency must be >= 1 or None "
                         f"(got {policy.refill_concurrency!r})")
    return _Run(trace, policy, capacity, tick_s, timeline_step_s, observer).run()
