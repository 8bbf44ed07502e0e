"""Arrival-rate forecast from session start times (pure: no I/O, no asyncio, no clock).

The forecaster is told when sessions start (:meth:`ArrivalForecaster.observe`) and is asked how
many start per second (:meth:`ArrivalForecaster.rate`, :meth:`ArrivalForecaster.rate_upper`).
Time is whatever the caller passes in, in seconds (unix time in the service, simulated time in
``voxfleet.sim``); the forecaster never reads a clock.

The model
---------
Session starts are treated as a Poisson process whose rate ``λ(t)`` drifts. Two views of it
are kept and blended.

**Short-term level: exponentially decayed counts.** Every start adds 1 to a counter that
decays with half-life ``h``: ``S(t) = Σ exp(-k (t - tᵢ))`` with ``k = ln 2 / h``. For a
constant rate, ``E[S] = λ · W`` where ``W = (1 - exp(-k · age)) / k`` is the *effective window*
(the decay kernel's mass over the time observed), so ``λ̂ = S / W``. ``S`` is also the
*effective number of starts* behind the estimate, which gives its Poisson uncertainty: the
upper bound ``(S + z²/2 + z·sqrt(S + z²/4)) / W`` is the score (Wilson-style) bound of a
Poisson count. Until the fast half-life (below) has passed, the history is read as that long
with no starts in it: a weak "nothing seen yet" prior instead of a division by a tiny window.

Two half-lives are kept: a *fast* one (default 60 s) notices a burst within tens of seconds,
a *slow* one (default 15 min) is a steady level that a few lucky seconds do not move.

**Seasonal profile: time of day (or of week).** The period (default 24 h) is cut into bins
(default 96 bins of 15 min; a weekly profile is ``season_s=7 days, season_bins=168``). Each
bin keeps the number of starts seen in it and its *exposure*, the seconds of history that fell
in it, computed in closed form from the time observed — so a bin that was watched and stayed
quiet is known to be quiet rather than unknown. A bin's rate is starts over exposure, smoothed
with its two neighbours, and the profile at time ``t`` is interpolated linearly between bin
centres.

**Blend.** The profile is not trusted before ``min_seasons`` whole periods of history (default
1); after that its weight grows as ``n / (n + 1)`` with ``n`` the periods seen, capped at
``max_seasonal_weight``: one day of history weighs 0.5, three days 0.75. So:

- ``rate(now) = (1 - w) · slow(now) + w · profile(now)`` — the point forecast;
- ``rate_upper(now, horizon_s, z)`` — the rate to *plan* with: the largest of the fast and the
  slow upper bounds and the blended profile's highest value between ``now`` and
  ``now + horizon_s``. A burst shows in the fast bound; a morning ramp that happened yesterday
  shows in the profile before it shows in the counts.

Everything is O(1) per start, and O(bins) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DAY_S = 86_400.0


@dataclass
class DecayedCounter:
    """Starts counted with exponential forgetting (half-life ``half_life_s``).

    ``value_at(t)`` is ``Σ exp(-k (t - tᵢ))`` over the starts ``tᵢ`` added so far. Histories
    shorter than ``prior_s`` (default: one half-life) are read as ``prior_s`` long.
    """

    half_life_s: float
    prior_s: float | None = None
    _value: float = 0.0
    _at: float | None = None

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0 (got {self.half_life_s!r})")
        if self.prior_s is not None and not self.prior_s > 0:
            raise ValueError(f"prior_s must be > 0 (got {self.prior_s!r})")

    @property
    def decay_per_s(self) -> float:
        return math.log(2) / self.half_life_s

    def add(self, t: float) -> None:
        if self._at is None:
            self._value, self._at = 1.0, t
        elif t >= self._at:
            self._value = self._value * math.exp(-self.decay_per_s * (t - self._at)) + 1.0
            self._at = t
        else:  # a start reported slightly late: it has already decayed a little
            self._value += math.exp(-self.decay_per_s * (self._at - t))

    def value_at(self, t: float) -> float:
        if self._at is None:
            return 0.0
        return self._value * math.exp(-self.decay_per_s * max(0.0, t - self._at))

    def window_s(self, observed_s: float) -> float:
        """Effective window: the kernel's mass over ``observed_s`` seconds of history (at
        least ``prior_s``, read as "that long seen, nothing in it")."""
        k = self.decay_per_s
        floor = self.half_life_s if self.prior_s is None else self.prior_s
        return (1.0 - math.exp(-k * max(observed_s, floor))) / k

    def rate(self, t: float, observed_s: float) -> float:
        return self.value_at(t) / self.window_s(observed_s)

    def rate_upper(self, t: float, observed_s: float, z: float) -> float:
        """Upper confidence bound on the rate (score bound of a Poisson count, ``z`` sigmas)."""
        count = self.value_at(t)
        half_z2 = z * z / 2.0
        return (count + half_z2 + z * math.sqrt(count + half_z2 / 2.0)) / self.window_s(observed_s)


@dataclass
class SeasonalProfile:
    """Starts and exposure per bin of a repeating period (time of day by default).

    Bin ``b`` covers ``[b·width, (b+1)·width)`` of each period, after shifting time by
    ``phase_s`` (e.g. a UTC offset, so that bins follow local time).
    """

    season_s: float = DAY_S
    bins: int = 96
    phase_s: float = 0.0
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.season_s > 0:
            raise ValueError(f"season_s must be > 0 (got {self.season_s!r})")
        if self.bins < 1:
            raise ValueError(f"season_bins must be >= 1 (got {self.bins!r})")
        if not self.counts:
            self.counts = [0] * self.bins

    @property
    def bin_width_s(self) -> float:
        return self.season_s / self.bins

    def bin_of(self, t: float) -> int:
        return min(self.bins - 1, int(((t + self.phase_s) % self.season_s) // self.bin_width_s))

    def add(self, t: float) -> None:
        self.counts[self.bin_of(t)] += 1

    def _time_in_bin_until(self, b: int, t: float) -> float:
        """Seconds of ``[0, t)`` (shifted by the phase) that fall in bin ``b``."""
        shifted = t + self.phase_s
        whole, into = divmod(shifted, self.season_s)
        width = self.bin_width_s
        return whole * width + min(width, max(0.0, into - b * width))

    def exposure_s(self, b: int, since: float, until: float) -> float:
        """Seconds of ``[since, until)`` that fall in bin ``b``."""
        if until <= since:
            return 0.0
        return self._time_in_bin_until(b, until) - self._time_in_bin_until(b, since)

    def bin_rate(self, b: int, since: float, until: float) -> float | None:
        """Starts per second in bin ``b`` and its two neighbours; None if never observed."""
        starts = 0
        seconds = 0.0
        for offset in (-1, 0, 1):
            neighbour = (b + offset) % self.bins
            starts += self.counts[neighbour]
            seconds += self.exposure_s(neighbour, since, until)
            if self.bins == 1:
                break
        return starts / seconds if seconds > 0 else None

    def rate_at(self, t: float, since: float, until: float) -> float | None:
        """The profile's rate at time ``t``, interpolated between bin centres."""
        width = self.bin_width_s
        position = ((t + self.phase_s) % self.season_s) / width - 0.5
        left = math.floor(position)
        frac = position - left
        left_rate = self.bin_rate(left % self.bins, since, until)
        right_rate = self.bin_rate((left + 1) % self.bins, since, until)
        if left_rate is None or right_rate is None:
            return left_rate if right_rate is None else right_rate
        return (1.0 - frac) * left_rate + frac * right_rate


class ArrivalForecaster:
    """Forecast of session starts per second: decayed counts blended with a seasonal profile.

    See the module docstring for the model. Feed it every session start with :meth:`observe`;
    ask :meth:`rate` for the point forecast and :meth:`rate_upper` for the rate to plan with.
    """

    def __init__(
        self,
        half_life_s: float = 900.0,
        fast_half_life_s: float = 60.0,
        *,
        season_s: float = DAY_S,
        season_bins: int = 96,
        phase_s: float = 0.0,
        min_seasons: float = 1.0,
        max_seasonal_weight: float = 0.75,
        started_at: float | None = None,
    ) -> None:
        if not 0.0 <= max_seasonal_weight <= 1.0:
            raise ValueError(f"max_seasonal_weight must be in [0, 1] (got {max_seasonal_weight!r})")
        if min_seasons < 0:
            raise ValueError(f"min_seasons must be >= 0 (got {min_seasons!r})")
        for name, value in (("half_life_s", half_life_s), ("fast_half_life_s", fast_half_life_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 (got {value!r})")
        if fast_half_life_s > half_life_s:
            raise ValueError(
                f"fast_half_life_s ({fast_half_life_s!r}) must not exceed half_life_s ({half_life_s!r})"
            )
        self.fast = DecayedCounter(fast_half_life_s)
        self.slow = DecayedCounter(half_life_s, prior_s=fast_half_life_s)
        self.profile = SeasonalProfile(season_s, season_bins, phase_s)
        self.min_seasons = min_seasons
        self.max_seasonal_weight = max_seasonal_weight
        self.started_at = started_at
        self.starts_seen = 0

    def begin(self, t: float) -> None:
        """History begins at ``t`` if it has not begun: the quiet time before the first start
        counts as observed (otherwise history begins at the first start)."""
        if self.started_at is None:
            self.started_at = t

    def observe(self, t: float) -> None:
        """A session started at time ``t`` (seconds)."""
        if self.started_at is None or t < self.started_at:
            self.started_at = t
        self.slow.add(t)
        self.fast.add(t)
        self.profile.add(t)
        self.starts_seen += 1

    def observed_s(self, now: float) -> float:
        """Seconds of history behind the forecast at ``now``."""
        return 0.0 if self.started_at is None else max(0.0, now - self.started_at)

    def seasonal_weight(self, now: float) -> float:
        """How much the seasonal profile is trusted at ``now`` (0 until ``min_seasons``)."""
        seasons = self.observed_s(now) / self.profile.season_s
        if seasons < self.min_seasons or seasons <= 0:
            return 0.0
        return min(self.max_seasonal_weight, seasons / (seasons + 1.0))

    def seasonal_rate(self, t: float, now: float) -> float | None:
        """The profile's rate at time ``t`` from the history seen up to ``now``."""
        if self.started_at is None:
            return None
        return self.profile.rate_at(t, self.started_at, now)

    def rate(self, now: float) -> float:
        """Point forecast of starts per second at ``now``."""
        observed = self.observed_s(now)
        level = self.slow.rate(now, observed)
        weight = self.seasonal_weight(now)
        seasonal = self.seasonal_rate(now, now) if weight > 0 else None
        if seasonal is None:
            return level
        return (1.0 - weight) * level + weight * seasonal

    def rate_upper(self, now: float, horizon_s: float = 0.0, z: float = 2.0) -> float:
        """Starts per second to plan for over ``[now, now + horizon_s]``, burst-aware.

        The largest of: the fast and slow counters' upper bounds (``z`` sigmas of Poisson
        noise) and the blended seasonal forecast's highest value over the horizon.
        """
        if z < 0:
            raise ValueError(f"z must be >= 0 (got {z!r})")
        observed = self.observed_s(now)
        candidates = [self.fast.rate_upper(now, observed, z), self.slow.rate_upper(now, observed, z)]
        weight = self.seasonal_weight(now)
        if weight > 0:
            level = self.slow.rate(now, observed)
            step = self.profile.bin_width_s / 2.0
            points = [now + i * step for i in range(int(max(0.0, horizon_s) // step) + 1)]
            points.append(now + max(0.0, horizon_s))
            for t in points:
                seasonal = self.seasonal_rate(t, now)
                if seasonal is not None:
                    candidates.append((1.0 - weight) * level + weight * seasonal)
        return max(candidates)
