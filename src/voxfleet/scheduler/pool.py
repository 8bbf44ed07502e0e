"""Warm-pool and queue policy (pure: no I/O, no asyncio).

Every warm-pool policy is a :class:`PoolPolicy`: told of each arrival, asked for a target
(bots warm or warming) given a :class:`PoolState`. The admission core
(``scheduler.admission``) asks it after every event, in the server and in the simulator alike.

The fixed rule, :class:`WarmPoolPolicy` (as :class:`PercentagePool`), is the one Pipecat Cloud
users know, made explicit: keep at least ``min_warm`` warm bots, and ``warm_pct`` percent of the
active sessions more, never more than ``max_bots`` bots (warm + active) for the agent and never
beyond what capacity has free. The forecast rule is ``pool_sizing.ForecastPool``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class PoolState:
    """What a policy sees of one agent's pool in one region when asked for its target.

    ``free``: how many more of the agent's bots fit in free capacity now; ``refill_s``: the
    measured seconds a new warm bot takes to be ready; ``refill_concurrency``: warm-ups at once
    (None: no limit).
    """

    now: float
    active: int
    warm: int
    warming: int
    queued: int
    free: int
    refill_s: float = 1.0
    refill_concurrency: int | None = 1

    @property
    def reserved(self) -> int:
        """Bots held: active + warm + warming."""
        return self.active + self.warm + self.warming

    @property
    def capacity(self) -> int:
        """The most bots of this pool that could be held now: those held plus those that fit."""
        return self.reserved + self.free


class PoolPolicy(Protocol):
    """A warm-pool policy: how many bots to hold warm or warming."""

    name: str

    def on_arrival(self, now: float) -> None:
        """A session start request arrived (before it is placed)."""

    def target(self, state: PoolState) -> int:
        """Bots to hold warm or warming (clamped by the caller to what capacity allows)."""


@dataclass
class PercentagePool:
    """:class:`WarmPoolPolicy` as a :class:`PoolPolicy` (no forecast)."""

    rule: WarmPoolPolicy
    name: str = "fixed"

    def on_arrival(self, now: float) -> None:
        pass

    def target(self, state: PoolState) -> int:
        return self.rule.target(state.active, fits_more=state.free, warm=state.warm + state.warming)

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "min_warm": self.rule.min_warm, "warm_pct": self.rule.warm_pct}


@dataclass(frozen=True)
class WarmPoolPolicy:
    min_warm: int = 1
    warm_pct: float = 0.0
    max_bots: int = 1000

    def target(self, active: int, fits_more: int, warm: int) -> int:
        """How many warm bots to hold, given the active sessions, how many more bots would fit in
        free capacity now, and how many warm bots exist (they already hold capacity)."""
        wanted = max(self.min_warm, math.ceil(active * self.warm_pct / 100))
        wanted = min(wanted, max(0, self.max_bots - active))
        return max(0, min(wanted, warm + fits_more))


class AdmissionQueue:
    """A bounded FIFO of waiting sessions with 1-based positions."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._waiting: OrderedDict[str, str] = OrderedDict()  # session_id -> agent

    def push(self, session_id: str, agent: str) -> int | None:
        """Queue the session; its position, or None when the queue is full."""
        if len(self._waiting) >= self.max_length:
            return None
        self._waiting[session_id] = agent
        return len(self._waiting)

    def position(self, session_id: str) -> int | None:
        for index, key in enumerate(self._waiting, start=1):
            if key == session_id:
                return index
        return None

    def remove(self, session_id: str) -> bool:
        return self._waiting.pop(session_id, None) is not None

    def waiting(self) -> list[str]:
        return list(self._waiting)

    def head(self) -> tuple[str, str] | None:
        return next(iter(self._waiting.items()), None)

    def __len__(self) -> int:
        return len(self._waiting)

    def by_agent(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for agent in self._waiting.values():
            counts[agent] = counts.get(agent, 0) + 1
        return counts
