"""A discrete-event simulation of one node's warm pool under a trace (pure, deterministic).

The node has room for ``capacity`` bots at once. Every bot holds one slot for its whole life,
whether it is *warming* (being initialised), *warm* (ready and idle) or *active* (serving a
session, including a session that is still cold-starting). So at every moment

    active + warm + warming <= capacity,

which the engine checks after every event (and lets a test observe).

What happens, mirroring ``voxfleet.scheduler.service``:

- **A session arrives.** A warm bot is there: it takes it at once (a warm start, no wait).
  Otherwise, if a slot is free, it cold-starts: it waits the policy's ``refill_s`` (a bot
  started on demand takes as long as any other). Otherwise it waits in a FIFO queue. Both of the
  latter count as cold starts: the session did not find a warm bot.
- **A session ends.** Its bot exits (one process per session) and frees its slot; the head of
  the queue, if any, cold-starts in it.
- **A warm bot becomes ready.** A queued session takes it if one waits; else it joins the pool.
- **After every event, and every ``tick_s`` of quiet,** the policy is asked for its target
  (warm + warming). Below it, new bots start initialising in free slots, at most
  ``refill_concurrency`` at a time (None: no limit, as in a cloud); above it, idle warm bots are
  retired. Bots already initialising are never cancelled.

Randomness lives in the trace; the engine itself is deterministic, so one trace and one policy
always give the same result.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voxfleet.sim.traces import Trace

_SESSION_END = 0
_BOT_READY = 1


@dataclass(frozen=True)
class PoolState:
    """What a policy sees when asked for its target."""

    now: float
    active: int
    warm: int
    warming: int
    queued: int
    capacity: int

    @property
    def reserved(self) -> int:
        """Slots held: active + warm + warming."""
        return self.active + self.warm + self.warming

    @property
    def free(self) -> int:
        return self.capacity - self.reserved


class SimPolicy(Protocol):
    """A warm-pool policy under simulation.

    ``refill_s``: seconds for a new bot (warm or cold-started) to be ready;
    ``refill_concurrency``: initialisations at once, None for no limit.
    """

    name: str
    refill_s: float
    refill_concurrency: int | None

    def on_arrival(self, now: float) -> None:
        """A session start request arrived (before it is placed)."""

    def target(self, state: PoolState) -> int:
        """Bots to hold warm or warming."""


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
        self.active = self.warm = self.warming = 0
        self.queue: deque[tuple[float, float]] = deque()  # (arrived at, session length)
        self.events: list[tuple[float, int, int]] = []  # (time, sequence, kind)
        self.sequence = 0
        self.now = trace.start_s
        self.next_sample = trace.start_s
        self.result = RunResult(trace.name, policy.name, capacity, trace.hours)

    # -- bookkeeping -----------------------------------------------------------------------
    def _schedule(self, at: float, kind: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, kind))

    def _advance(self, t: float) -> None:
        """Move the clock to ``t``, integrating idle warm bots and sampling the timeline."""
        if self.timeline_step_s is not None:
            while self.next_sample <= t:
                self.result.timeline.append(
                    TimelinePoint(self.next_sample, self.active, self.warm, self.warming, len(self.queue)))
                self.next_sample += self.timeline_step_s
        self.result.idle_bot_seconds += self.warm * (t - self.now)
        self.now = t

    def state(self) -> PoolState:
        return PoolState(self.now, self.active, self.warm, self.warming, len(self.queue), self.capacity)

    def _check(self) -> None:
        reserved = self.active + self.warm + self.warming
        if reserved > self.capacity or min(self.active, self.warm, self.warming) < 0:
            raise CapacityViolation(
                f"t={self.now:.3f}: active {self.active} + warm {self.warm} + warming {self.warming} "
                f"> capacity {self.capacity} (policy {self.policy.name})")
        if self.queue and self.warm:
            raise CapacityViolation(f"t={self.now:.3f}: {self.warm} warm bots idle while sessions queue")
        self.result.peak_reserved = max(self.result.peak_reserved, reserved)
        if self.observer is not None:
            self.observer(self.state())

    # -- sessions ----------------------------------------------------------------------------
    def _begin(self, arrived_at: float, length: float, ready_in: float) -> None:
        """A session takes a slot now; its bot is ready after ``ready_in``, then it runs."""
        self.active += 1
        self.result.waits_s.append(self.now - arrived_at + ready_in)
        self._schedule(self.now + ready_in + length, _SESSION_END)

    def arrive(self, length: float) -> None:
        self.policy.on_arrival(self.now)
        self.result.sessions += 1
        if self.warm:
            self.warm -= 1
            self.result.warm_starts += 1
            self._begin(self.now, length, 0.0)
            return
        self.result.cold_starts += 1
        if self.active + self.warm + self.warming < self.capacity:
            self._begin(self.now, length, self.policy.refill_s)
        else:
            self.result.queued += 1
            self.queue.append((self.now, length))

    def session_ended(self) -> None:
        self.active -= 1
        if self.queue:
            arrived_at, length = self.queue.popleft()
            self._begin(arrived_at, length, self.policy.refill_s)

    def bot_ready(self) -> None:
        self.warming -= 1
        if self.queue:
            arrived_at, length = self.queue.popleft()
            self._begin(arrived_at, length, 0.0)
        else:
            self.warm += 1

    # -- the pool --------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Bring warm + warming towards the policy's target, within capacity and concurrency."""
        target = max(0, int(self.policy.target(self.state())))
        limit = self.policy.refill_concurrency
        while (self.warm + self.warming < target
               and self.active + self.warm + self.warming < self.capacity
               and (limit is None or self.warming < limit)):
            self.warming += 1
            self.result.bots_warmed += 1
            self._schedule(self.now + self.policy.refill_s, _BOT_READY)
        while self.warm + self.warming > target and self.warm:
            self.warm -= 1
            self.result.bots_retired += 1

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
                _, _, kind = heapq.heappop(self.events)
                if kind == _SESSION_END:
                    self.session_ended()
                else:
                    self.bot_ready()
            elif t_arrival == t:
                self.arrive(lengths[index])
                index += 1
            else:
                next_tick = t + self.tick_s
            self.reconcile()
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
