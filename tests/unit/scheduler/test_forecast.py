"""Arrival-rate forecaster: decayed counts, seasonal profile, blend (pure, known answers)."""

from __future__ import annotations

import math
import random

import pytest

from voxfleet.scheduler.forecast import DAY_S, ArrivalForecaster, DecayedCounter, SeasonalProfile


def evenly(rate_per_s: float, start: float, end: float) -> list[float]:
    step = 1.0 / rate_per_s
    return [start + step * i for i in range(int((end - start) * rate_per_s))]


def test_no_history_means_no_rate_and_a_small_finite_bound():
    forecaster = ArrivalForecaster()
    assert forecaster.rate(0.0) == 0.0
    upper = forecaster.rate_upper(0.0)
    assert 0.0 < upper < 0.2  # z^2 over half a fast window, not a division by zero


def test_counter_halves_after_one_half_life():
    counter = DecayedCounter(half_life_s=60.0)
    counter.add(100.0)
    assert counter.value_at(100.0) == 1.0
    assert counter.value_at(160.0) == pytest.approx(0.5)
    assert counter.value_at(50.0) == 1.0  # never grows backwards in time


def test_constant_rate_is_recovered_exactly_for_even_arrivals():
    forecaster = ArrivalForecaster(half_life_s=600.0, fast_half_life_s=60.0)
    for t in evenly(0.1, 0.0, 7200.0):
        forecaster.observe(t)
    assert forecaster.rate(7200.0) == pytest.approx(0.1, rel=0.02)
    assert forecaster.fast.rate(7200.0, 7200.0) == pytest.approx(0.1, rel=0.1)


def test_early_estimate_is_bias_corrected():
    """After 5 minutes of one start a second, a 15-minute half-life already reads ~1/s."""
    forecaster = ArrivalForecaster(half_life_s=900.0)
    for t in evenly(1.0, 0.0, 300.0):
        forecaster.observe(t)
    assert forecaster.rate(300.0) == pytest.approx(1.0, rel=0.05)


def test_poisson_rate_within_noise_and_upper_bound_above_it():
    rng = random.Random(3)
    forecaster = ArrivalForecaster()
    t = 0.0
    while t < 4 * 3600.0:
        t += rng.expovariate(0.05)
        forecaster.observe(t)
    now = 4 * 3600.0
    assert forecaster.rate(now) == pytest.approx(0.05, rel=0.3)
    assert forecaster.rate_upper(now) > forecaster.rate(now)
    assert forecaster.rate_upper(now, z=0.0) <= forecaster.rate_upper(now, z=2.0)


def test_fast_counter_sees_a_burst_the_slow_level_does_not():
    forecaster = ArrivalForecaster(half_life_s=900.0, fast_half_life_s=60.0)
    for t in evenly(0.05, 0.0, 3600.0):
        forecaster.observe(t)
    for t in evenly(0.5, 3600.0, 3660.0):
        forecaster.observe(t)
    now = 3660.0
    assert forecaster.rate(now) < 0.1
    assert forecaster.rate_upper(now) > 0.25


def test_late_start_reports_are_tolerated():
    forecaster = ArrivalForecaster()
    forecaster.observe(100.0)
    forecaster.observe(99.0)
    assert forecaster.starts_seen == 2
    assert forecaster.slow.value_at(100.0) == pytest.approx(1.0 + math.exp(-forecaster.slow.decay_per_s))


def test_exposure_is_closed_form_per_bin():
    profile = SeasonalProfile(season_s=100.0, bins=4)
    exposures = [profile.exposure_s(b, 0.0, 250.0) for b in range(4)]
    assert exposures == [75.0, 75.0, 50.0, 50.0]
    assert sum(profile.exposure_s(b, 37.0, 412.5) for b in range(4)) == pytest.approx(375.5)
    assert profile.bin_of(99.999) == 3 and profile.bin_of(100.0) == 0


def test_seasonal_weight_grows_with_whole_days_of_history():
    forecaster = ArrivalForecaster()
    forecaster.begin(0.0)
    assert forecaster.seasonal_weight(0.5 * DAY_S) == 0.0
    assert forecaster.seasonal_weight(1.0 * DAY_S) == pytest.approx(0.5)
    assert forecaster.seasonal_weight(10 * DAY_S) == pytest.approx(0.75)


def test_profile_anticipates_a_ramp_seen_on_previous_days():
    """Quiet nights, busy from 09:00: on day 3 at 08:50 the counters still read "quiet", but
    the plan for the next 20 minutes already includes the 09:00 ramp."""
    forecaster = ArrivalForecaster()
    for day in range(2):
        base = day * DAY_S
        for t in evenly(0.01, base, base + 9 * 3600.0):
            forecaster.observe(t)
        for t in evenly(0.2, base + 9 * 3600.0, base + DAY_S):
            forecaster.observe(t)
    day3 = 2 * DAY_S
    for t in evenly(0.01, day3, day3 + 8 * 3600.0 + 50 * 60.0):
        forecaster.observe(t)
    now = day3 + 8 * 3600.0 + 50 * 60.0
    assert forecaster.seasonal_rate(now + 60 * 60.0, now) == pytest.approx(0.2, rel=0.05)
    assert forecaster.rate_upper(now, horizon_s=0.0) < 0.06
    assert forecaster.rate_upper(now, horizon_s=20 * 60.0) > 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"half_life_s": 0.0}, "half_life_s must be > 0"),
        ({"fast_half_life_s": -1.0}, "fast_half_life_s must be > 0"),
        ({"half_life_s": 30.0, "fast_half_life_s": 60.0}, "must not exceed half_life_s"),
        ({"max_seasonal_weight": 1.5}, "max_seasonal_weight must be in"),
        ({"season_bins": 0}, "season_bins must be >= 1"),
    ],
)
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArrivalForecaster(**kwargs)
