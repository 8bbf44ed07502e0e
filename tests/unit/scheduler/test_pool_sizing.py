"""Predictive warm-pool sizing: Poisson quantiles, bounds, and a known answer in simulation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from voxfleet.scheduler.pool_sizing import PredictiveWarmPoolPolicy, base_stock, poisson_quantile
from voxfleet.sim.engine import PoolState, simulate
from voxfleet.sim.policies import PolicySettings, build_policy
from voxfleet.sim.traces import SessionLengths, build_trace


def poisson_cdf(n: int, mean: float) -> float:
    return sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(n + 1))


@pytest.mark.parametrize(
    ("mean", "probability", "expected"),
    [(0.0, 0.99, 0), (0.05, 0.99, 1), (1.5, 0.99, 5), (1.0, 0.5, 1), (10.0, 0.999, 21), (3.0, 0.0, 0)],
)
def test_poisson_quantile_known_values(mean, probability, expected):
    assert poisson_quantile(mean, probability) == expected
    if mean > 0 and probability > 0:
        assert poisson_cdf(expected, mean) >= probability
        assert expected == 0 or poisson_cdf(expected - 1, mean) < probability


def test_large_means_use_an_approximation_close_to_the_exact_quantile():
    exact = poisson_quantile(499.0, 0.99)
    approx = poisson_quantile(501.0, 0.99)
    assert abs(approx - exact) <= 3


def test_base_stock_matches_the_module_docstring():
    assert base_stock(0.05, 1.0, 0.01) == 2  # 3 starts a minute, 1 s refill
    assert base_stock(0.05, 30.0, 0.01) == 6  # same load, Pipecat Cloud's 30 s
    assert base_stock(0.0, 30.0, 0.01) == 1


def test_target_applies_every_bound():
    policy = PredictiveWarmPoolPolicy(min_warm=1, warm_pct=50, max_bots=10, cold_start_probability=0.01)
    common = {"refill_s": 30.0}
    assert policy.target(0, fits_more=20, warm=0, forecast_rate=0.0, **common) == 1  # min_warm
    assert policy.target(0, fits_more=20, warm=0, forecast_rate=0.05, **common) == 6  # forecast
    assert policy.target(8, fits_more=20, warm=0, forecast_rate=0.0, **common) == 2  # max_bots - active
    assert policy.target(4, fits_more=20, warm=0, forecast_rate=0.0, **common) == 2  # 50 % of 4 active
    assert policy.target(2, fits_more=1, warm=2, forecast_rate=0.05, **common) == 3  # free capacity
    assert policy.target(10, fits_more=5, warm=0, forecast_rate=1.0, **common) == 0  # at max_bots


def test_a_surge_faster_than_refills_adds_the_drain_over_the_horizon():
    policy = PredictiveWarmPoolPolicy(min_warm=0, drain_horizon_s=60.0)
    unlimited = policy.wanted(0, forecast_rate=2.0, refill_s=1.0)
    one_at_a_time = policy.wanted(0, forecast_rate=2.0, refill_s=1.0, refill_concurrency=1)
    assert one_at_a_time - unlimited == 60  # (2/s - 1/s) x 60 s


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_warm": -1}, "min_warm must be >= 0"),
        ({"cold_start_probability": 0.0}, "cold_start_probability must be in"),
        ({"max_bots": 0}, "max_bots must be >= 1"),
    ],
)
def test_bad_policy_fields_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PredictiveWarmPoolPolicy(**kwargs)


@dataclass
class KnownRatePolicy:
    """The sizing rule fed the true arrival rate (no forecast error), minus ``short`` bots."""

    rate: float
    refill_s: float
    short: int = 0
    refill_concurrency: int | None = None
    name: str = "known_rate"

    def on_arrival(self, now: float) -> None:
        pass

    def target(self, state: PoolState) -> int:
        sizing = PredictiveWarmPoolPolicy(min_warm=0, max_bots=state.capacity, cold_start_probability=0.01)
        wanted = sizing.target(state.active, fits_more=state.free, warm=state.warm + state.warming,
                               forecast_rate=self.rate, refill_s=self.refill_s)
        return wanted - self.short


def test_constant_rate_poisson_stays_under_the_target_and_one_bot_less_does_not():
    """λ = 0.2/s, 5 s refill: Poisson(1) arrivals per refill, so 5 bots for 1 % (theory 0.37 %);
    4 bots would give 1.9 %."""
    trace = build_trace("poisson", seed=11, hours=20.0, rate_per_min=12.0, lengths=SessionLengths(median_s=60))
    sized = simulate(trace, KnownRatePolicy(rate=0.2, refill_s=5.0), capacity=1000)
    short = simulate(trace, KnownRatePolicy(rate=0.2, refill_s=5.0, short=1), capacity=1000)
    assert sized.sessions > 10_000
    assert sized.cold_start_pct < 1.0
    assert short.cold_start_pct > 1.0


def test_forecast_driven_policy_meets_the_target_on_steady_traffic():
    trace = build_trace("poisson", seed=5, hours=6.0, rate_per_min=6.0)
    settings = PolicySettings(capacity=64, refill_s=5.0, refill_concurrency=None, target_cold_pct=1.0)
    result = simulate(trace, build_policy("voxfleet", settings), capacity=settings.capacity)
    assert result.sessions > 1500
    assert result.cold_start_pct < 1.0
