"""Predictive warm-pool sizing (pure: state in, a number out; no I/O, no asyncio).

How many warm bots to hold so that an arriving session rarely finds none, while holding as few
idle bots as that allows.

The model: a warm pool is inventory with a lead time
------------------------------------------------------
Each session that takes a warm bot makes the pool ask for a replacement, which is ready
``refill_s`` seconds later (the measured fork + init time; ~1 s here, ~30 s on Pipecat Cloud).
Count the pool's *position* ``S = warm + warming``: every bot ready or on its way. This is a
base-stock inventory: at any moment the refills outstanding are the sessions that arrived in
the last ``refill_s`` seconds, so with arrivals Poisson at rate ``λ`` their number ``N`` is
Poisson with mean ``λ · refill_s``, and an arriving session (which sees the time-average state,
PASTA) finds a warm bot exactly when ``N < S``. So

    P(cold start) = P(N >= S),   and the smallest safe position is
    S = Q(1 - ε) + 1,           Q = the Poisson(λ · refill_s) quantile, ε = target cold-start probability.

A few numbers: ``λ = 0.05/s`` (3 starts a minute) with a 1 s refill needs ``S = 2`` for 1 %;
with a 30 s refill it needs ``S = 6``; "one idle per active session" holds ~10 for that load
when sessions last ~3 minutes.

Two corrections to the ideal:

- **The rate is a forecast.** Callers pass a planning rate, typically
  :meth:`voxfleet.scheduler.forecast.ArrivalForecaster.rate_upper`, which already leans high
  when the estimate is uncertain or a burst is starting.
- **Refills can be a bottleneck.** With at most ``k`` initialisations at once, the pool
  refills at ``μ = k / refill_s`` bots a second. When the planning rate exceeds ``μ`` no
  position sized over one lead time suffices — the pool drains at ``λ - μ`` — so the position
  grows by the drain over ``drain_horizon_s`` (how long a surge must be covered for).

Then the same rules as :class:`voxfleet.scheduler.pool.WarmPoolPolicy` apply: at least
``min_warm``; at least ``warm_pct`` percent of the active sessions (an operator's explicit
floor, combined with the forecast by taking the larger); never more than ``max_bots - active``
(bots of this agent, warm + active); never more than the warm bots already held plus what fits
in free capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from voxfleet.scheduler.forecast import ArrivalForecaster
from voxfleet.scheduler.pool import PoolState

_EXACT_POISSON_MAX_MEAN = 500.0  # exp(-mean) stays a normal float well past this


def poisson_quantile(mean: float, probability: float) -> int:
    """The smallest ``n`` with ``P(N <= n) >= probability`` for ``N ~ Poisson(mean)``.

    Exact summation up to a mean of 500; above it, the normal approximation with the
    Cornish-Fisher skew term (errors of a unit or so where the quantile is in the hundreds).
    """
    if mean < 0 or math.isnan(mean):
        raise ValueError(f"Poisson mean must be >= 0 (got {mean!r})")
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"probability must be in [0, 1) (got {probability!r})")
    if mean == 0.0 or probability == 0.0:
        return 0
    if mean > _EXACT_POISSON_MAX_MEAN:
        z = NormalDist().inv_cdf(probability)
        return max(0, math.ceil(mean + z * math.sqrt(mean) + (z * z - 1.0) / 6.0 - 0.5))
    term = math.exp(-mean)
    cumulative = term
    n = 0
    while cumulative < probability:
        n += 1
        term *= mean / n
        cumulative += term
        if term == 0.0 and n > mean:  # tail exhausted in floating point
            break
    return n


def base_stock(rate_per_s: float, lead_time_s: float, cold_start_probability: float) -> int:
    """Smallest pool position (warm + warming) whose cold-start probability is at most
    ``cold_start_probability`` when arrivals are Poisson at ``rate_per_s`` and each refill takes
    ``lead_time_s``: the Poisson quantile of arrivals over the lead time, plus one."""
    if rate_per_s < 0 or lead_time_s < 0:
        raise ValueError(f"rate and lead time must be >= 0 (got {rate_per_s!r}, {lead_time_s!r})")
    if not 0.0 < cold_start_probability < 1.0:
        raise ValueError(f"cold_start_probability must be in (0, 1) (got {cold_start_probability!r})")
    return poisson_quantile(rate_per_s * lead_time_s, 1.0 - cold_start_probability) + 1


@dataclass(frozen=True)
class PredictiveWarmPoolPolicy:
    """Warm-pool size from a forecast arrival rate and the measured refill time.

    Fields:
        min_warm: warm bots kept at all times (capacity allowing), like ``min_agents``.
        warm_pct: at least this percentage of the active sessions is kept warm (0: off).
        max_bots: most bots (warm + active) of the agent.
        cold_start_probability: the target chance that an arriving session finds no warm bot.
        drain_horizon_s: how long a surge faster than the refill rate must be covered for.
    """

    min_warm: int = 1
    warm_pct: float = 0.0
    max_bots: int = 1000
    cold_start_probability: float = 0.01
    drain_horizon_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_warm < 0:
            raise ValueError(f"min_warm must be >= 0 (got {self.min_warm!r})")
        if self.warm_pct < 0:
            raise ValueError(f"warm_pct must be >= 0 (got {self.warm_pct!r})")
        if self.max_bots < 1:
            raise ValueError(f"max_bots must be >= 1 (got {self.max_bots!r})")
        if not 0.0 < self.cold_start_probability < 1.0:
            raise ValueError(
                f"cold_start_probability must be in (0, 1) (got {self.cold_start_probability!r})"
            )
        if self.drain_horizon_s < 0:
            raise ValueError(f"drain_horizon_s must be >= 0 (got {self.drain_horizon_s!r})")

    def wanted(self, active: int, forecast_rate: float, refill_s: float,
               refill_concurrency: int | None = None) -> int:
        """The pool position the model asks for, before capacity bounds."""
        position = base_stock(forecast_rate, refill_s, self.cold_start_probability)
        if refill_concurrency is not None and refill_s > 0:
            refill_rate = refill_concurrency / refill_s
            if forecast_rate > refill_rate:
                position += math.ceil((forecast_rate - refill_rate) * self.drain_horizon_s)
        return max(position, self.min_warm, math.ceil(active * self.warm_pct / 100.0))

    def target(self, active: int, fits_more: int, warm: int, *, forecast_rate: float,
               refill_s: float, refill_concurrency: int | None = None) -> int:
        """How many warm bots (ready or warming) to hold.

        ``active``: sessions running; ``fits_more``: how many more bots free capacity holds now;
        ``warm``: warm bots held already, ready or warming (they hold capacity already);
        ``forecast_rate``: planned session starts per second; ``refill_s``: seconds a new warm
        bot takes to be ready; ``refill_concurrency``: initialisations at once (None: no limit).
        """
        wanted = self.wanted(active, forecast_rate, refill_s, refill_concurrency)
        wanted = min(wanted, max(0, self.max_bots - active))
        return max(0, min(wanted, warm + fits_more))


@dataclass
class ForecastPool:
    """The forecast pool as a :class:`~voxfleet.scheduler.pool.PoolPolicy`: the forecaster's
    planning rate (``rate_upper`` over one refill, ``z`` standard errors high) into
    :class:`PredictiveWarmPoolPolicy`, with the refill time the pool measured."""

    sizing: PredictiveWarmPoolPolicy
    forecaster: ArrivalForecaster = field(default_factory=ArrivalForecaster)
    z: float = 2.0
    name: str = "predictive"

    def on_arrival(self, now: float) -> None:
        self.forecaster.observe(now)

    def target(self, state: PoolState) -> int:
        self.forecaster.begin(state.now)  # history begins when the pool does
        rate = self.forecaster.rate_upper(state.now, horizon_s=state.refill_s, z=self.z)
        return self.sizing.target(state.active, fits_more=state.free, warm=state.warm + state.warming,
                                  forecast_rate=rate, refill_s=state.refill_s,
                                  refill_concurrency=state.refill_concurrency)

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "min_warm": self.sizing.min_warm, "warm_pct": self.sizing.warm_pct}
