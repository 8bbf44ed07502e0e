"""The warm-pool policies compared by the simulator, each a small :class:`~voxfleet.sim.engine.SimPolicy`.

- ``fixed_min`` — Pipecat Cloud's ``min_agents`` alone: a fixed number of warm bots, refilled
  after each use.
- ``pcc_buffer`` — Pipecat Cloud's automatic idle agents: warm capacity equals
  ``max(min_agents, active)`` ("one idle per active session"; see its capacity-planning guide),
  and a new idle agent is ready about 30 s after it is requested. Its instances come from a
  cloud, so initialisations are not limited in number — only by the node's free slots. (Its
  5-minute cooldown of ended instances is not modelled: voxfleet bots exit with their session,
  and the cooldown would only add idle time to this baseline.)
- ``livekit_idle`` — LiveKit Agents' worker: ``ceil(cpus)`` idle processes when nothing runs;
  with jobs running, ``min(ceil(cpus), ceil((load_threshold - load) / load_per_job))``, so the
  pool shrinks to nothing as the load nears ``load_threshold`` (0.7). The load is modelled as
  the CPU the active sessions reserve over the node's CPUs.
- ``percentage`` — voxfleet's current rule, :class:`voxfleet.scheduler.pool.WarmPoolPolicy`:
  ``max(min_warm, warm_pct % of active)``, no forecast.
- ``voxfleet`` — the forecast: :class:`voxfleet.scheduler.forecast.ArrivalForecaster`'s planning
  rate into :class:`voxfleet.scheduler.pool_sizing.PredictiveWarmPoolPolicy` (Poisson quantile of
  arrivals during one refill).

All but ``pcc_buffer`` run on voxfleet's own refill: ``refill_s`` (1 s by default, the measured
fork + init of a warm bot) with at most ``refill_concurrency`` initialisations at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from voxfleet.scheduler.forecast import ArrivalForecaster
from voxfleet.scheduler.pool import PercentagePool, PoolState, WarmPoolPolicy
from voxfleet.scheduler.pool_sizing import ForecastPool, PredictiveWarmPoolPolicy
from voxfleet.sim.engine import SimPolicy

POLICY_NAMES = ("fixed_min", "pcc_buffer", "livekit_idle", "percentage", "voxfleet")


@dataclass(frozen=True)
class PolicySettings:
    """Knobs of the compared policies; defaults are the ones the report is run with.

    ``refill_concurrency`` None means no limit.
    """

    capacity: int = 64
    refill_s: float = 1.0
    refill_concurrency: int | None = 1
    pcc_refill_s: float = 30.0
    fixed_warm: int = 4
    pcc_min_agents: int = 1
    cpus: float | None = None  # LiveKit's CPU count; default: capacity x bot_cpus
    bot_cpus: float = 0.5  # agent-1x
    load_threshold: float = 0.7
    min_warm: int = 1
    warm_pct: float = 25.0
    target_cold_pct: float = 1.0
    forecast_half_life_s: float = 900.0
    forecast_fast_half_life_s: float = 60.0
    forecast_z: float = 2.0
    drain_horizon_s: float = 60.0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1 (got {self.capacity!r})")
        if not 0.0 < self.target_cold_pct < 100.0:
            raise ValueError(f"target_cold_pct must be in (0, 100) (got {self.target_cold_pct!r})")
        if self.refill_concurrency is not None and self.refill_concurrency < 1:
            raise ValueError(f"refill_concurrency must be >= 1 or None (got {self.refill_concurrency!r})")
        if self.cpus is not None and not self.cpus > 0:
            raise ValueError(f"cpus must be > 0 (got {self.cpus!r})")

    @property
    def node_cpus(self) -> float:
        return self.cpus if self.cpus is not None else self.capacity * self.bot_cpus


@dataclass
class FixedMinPolicy:
    warm: int
    refill_s: float
    refill_concurrency: int | None
    name: str = "fixed_min"

    def on_arrival(self, now: float) -> None:
        pass

    def target(self, state: PoolState) -> int:
        return self.warm


@dataclass
class PipecatCloudBufferPolicy:
    min_agents: int
    refill_s: float = 30.0
    refill_concurrency: int | None = None
    name: str = "pcc_buffer"

    def on_arrival(self, now: float) -> None:
        pass

    def target(self, state: PoolState) -> int:
        return max(self.min_agents, state.active)


@dataclass
class LiveKitIdlePolicy:
    cpus: float
    bot_cpus: float
    load_threshold: float
    refill_s: float
    refill_concurrency: int | None
    name: str = "livekit_idle"

    def on_arrival(self, now: float) -> None:
        pass

    def target(self, state: PoolState) -> int:
        default_idle = math.ceil(self.cpus)
        if state.active == 0:
            return default_idle
        load = state.active * self.bot_cpus / self.cpus
        load_per_job = load / state.active
        available = max(self.load_threshold - load, 0.0)
        return min(math.ceil(available / load_per_job), default_idle)


@dataclass
class PercentagePolicy(PercentagePool):
    """The server's fixed rule, :class:`voxfleet.scheduler.pool.PercentagePool`, on voxfleet's refill."""

    refill_s: float = 1.0
    refill_concurrency: int | None = 1
    name: str = "percentage"


@dataclass
class ForecastPolicy(ForecastPool):
    """The server's forecast rule, :class:`voxfleet.scheduler.pool_sizing.ForecastPool`, on
    voxfleet's refill."""

    refill_s: float = 1.0
    refill_concurrency: int | None = 1
    name: str = "voxfleet"


def build_policy(name: str, settings: PolicySettings) -> SimPolicy:
    """A fresh policy (forecast state included) by its report name."""
    s = settings
    if name == "fixed_min":
        return FixedMinPolicy(s.fixed_warm, s.refill_s, s.refill_concurrency)
    if name == "pcc_buffer":
        return PipecatCloudBufferPolicy(s.pcc_min_agents, s.pcc_refill_s, None)
    if name == "livekit_idle":
        return LiveKitIdlePolicy(s.node_cpus, s.bot_cpus, s.load_threshold, s.refill_s, s.refill_concurrency)
    if name == "percentage":
        rule = WarmPoolPolicy(min_warm=s.min_warm, warm_pct=s.warm_pct, max_bots=s.capacity)
        return PercentagePolicy(rule, refill_s=s.refill_s, refill_concurrency=s.refill_concurrency)
    if name == "voxfleet":
        sizing = PredictiveWarmPoolPolicy(min_warm=s.min_warm, warm_pct=0.0, max_bots=s.capacity,
                                          cold_start_probability=s.target_cold_pct / 100.0,
                                          drain_horizon_s=s.drain_horizon_s)
        forecaster = ArrivalForecaster(s.forecast_half_life_s, s.forecast_fast_half_life_s)
        return ForecastPolicy(sizing, forecaster, s.forecast_z, refill_s=s.refill_s,
                              refill_concurrency=s.refill_concurrency)
    raise ValueError(f"policy {name!r} is unknown (known: {', '.join(POLICY_NAMES)})")
