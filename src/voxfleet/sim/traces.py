"""Session traces for the warm-pool simulator: when sessions start and how long they last.

A trace is a fixed list of session start times with a length for each session. It is built
once per seed and then replayed, unchanged, against every policy, so policies are compared on
exactly the same sessions.

Four kinds:

- ``poisson``: steady Poisson arrivals at ``rate_per_min``.
- ``bursty``: a Markov-modulated Poisson process with two states. Calm (exponentially long,
  mean 25 min) alternates with bursts (mean 4 min) six times as intense — a campaign going
  out, a TV spot, an outage elsewhere. The calm rate is set so the long-run mean is
  ``rate_per_min``.
- ``diurnal``: a non-homogeneous Poisson process following a 24 h profile (quiet nights at
  ~5 % of the mean, a morning ramp, two daytime peaks at ~1.8x the mean), by thinning. Time 0
  is midnight.
- ``replay``: recorded session start times read from a file — a JSON list of unix timestamps,
  or text/CSV with one timestamp per line (blank lines, ``#`` comments and a non-numeric
  header line are skipped). voxfleet has no persistent store of session history yet, so a
  file is what replay reads; once sessions are stored, an export of their start times is
  exactly this format.

Session lengths are lognormal (median 150 s, sigma 0.7 by default, so a mean of about 3 min and
a long tail), capped at ``max_s``. Arrivals and lengths use separate random streams derived
from the seed and the trace's name, so each trace is reproducible on its own.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

TRACE_KINDS = ("poisson", "bursty", "diurnal")

# Relative call volume by hour of day (0-23); normalised to a mean of 1 where used.
DIURNAL_SHAPE = (
    0.10, 0.06, 0.05, 0.05, 0.06, 0.12, 0.30, 0.65, 1.10, 1.55, 1.75, 1.80,
    1.60, 1.55, 1.70, 1.80, 1.70, 1.50, 1.30, 1.10, 0.90, 0.65, 0.40, 0.20,
)


@dataclass(frozen=True)
class SessionLengths:
    """Lognormal session lengths: ``median_s`` and log-space ``sigma``, capped at ``max_s``."""

    median_s: float = 150.0
    sigma: float = 0.7
    max_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.median_s > 0:
            raise ValueError(f"session median must be > 0 s (got {self.median_s!r})")
        if self.sigma < 0:
            raise ValueError(f"session sigma must be >= 0 (got {self.sigma!r})")
        if not self.max_s > 0:
            raise ValueError(f"session max must be > 0 s (got {self.max_s!r})")

    @property
    def mean_s(self) -> float:
        """Mean of the uncapped distribution."""
        return self.median_s * math.exp(self.sigma * self.sigma / 2.0)

    def draw(self, rng: random.Random) -> float:
        return min(self.max_s, rng.lognormvariate(math.log(self.median_s), self.sigma))


@dataclass(frozen=True)
class Trace:
    """Session start times (seconds, ascending) and each session's length, over
    ``[start_s, end_s)``."""

    name: str
    arrivals: tuple[float, ...]
    durations: tuple[float, ...]
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if len(self.arrivals) != len(self.durations):
            raise ValueError(
                f"trace {self.name!r}: {len(self.arrivals)} arrivals but {len(self.durations)} durations"
            )
        if self.end_s < self.start_s:
            raise ValueError(f"trace {self.name!r}: end {self.end_s} before start {self.start_s}")
        if any(b < a for a, b in zip(self.arrivals, self.arrivals[1:])):
            raise ValueError(f"trace {self.name!r}: arrivals must be in ascending order")
        if self.arrivals and self.arrivals[0] < self.start_s:
            raise ValueError(f"trace {self.name!r}: arrival {self.arrivals[0]} before the start {self.start_s}")

    @property
    def hours(self) -> float:
        return (self.end_s - self.start_s) / 3600.0

    def __len__(self) -> int:
        return len(self.arrivals)


def _stream(seed: int, name: str, purpose: str) -> random.Random:
    """A random stream that depends only on the seed, the trace name and the purpose."""
    return random.Random(f"voxfleet-sim:{seed}:{name}:{purpose}")


def _with_lengths(name: str, arrivals: Sequence[float], start_s: float, end_s: float,
                  lengths: SessionLengths, seed: int) -> Trace:
    rng = _stream(seed, name, "lengths")
    return Trace(name, tuple(arrivals), tuple(lengths.draw(rng) for _ in arrivals), start_s, end_s)


def poisson_arrivals(rate_per_s: float, start_s: float, end_s: float, rng: random.Random) -> list[float]:
    """Homogeneous Poisson arrivals at ``rate_per_s`` over ``[start_s, end_s)``."""
    if rate_per_s < 0:
        raise ValueError(f"rate must be >= 0 (got {rate_per_s!r})")
    arrivals: list[float] = []
    if rate_per_s == 0:
        return arrivals
    t = start_s
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= end_s:
            return arrivals
        arrivals.append(t)


def mmpp_arrivals(calm_rate_per_s: float, burst_rate_per_s: float, mean_calm_s: float,
                  mean_burst_s: float, start_s: float, end_s: float, rng: random.Random) -> list[float]:
    """Two-state Markov-modulated Poisson arrivals, starting calm."""
    arrivals: list[float] = []
    t, bursting = start_s, False
    while t < end_s:
        stay = rng.expovariate(1.0 / (mean_burst_s if bursting else mean_calm_s))
        until = min(end_s, t + stay)
        arrivals.extend(poisson_arrivals(burst_rate_per_s if bursting else calm_rate_per_s, t, until, rng))
        t, bursting = until, not bursting
    return arrivals


def thinned_arrivals(rate_at: Callable[[float], float], peak_rate_per_s: float, start_s: float,
                     end_s: float, rng: random.Random) -> list[float]:
    """Non-homogeneous Poisson arrivals with rate ``rate_at(t) <= peak_rate_per_s`` (thinning)."""
    return [t for t in poisson_arrivals(peak_rate_per_s, start_s, end_s, rng)
            if rng.random() * peak_rate_per_s < rate_at(t)]


def diurnal_rate(mean_rate_per_s: float, shape: Sequence[float] = DIURNAL_SHAPE) -> Callable[[float], float]:
    """Rate at time ``t`` (seconds after midnight of day 0): the hourly shape, interpolated
    linearly between hour midpoints, scaled to average ``mean_rate_per_s``."""
    if len(shape) != 24 or any(v < 0 for v in shape):
        raise ValueError("diurnal shape must be 24 non-negative hourly values")
    scale = mean_rate_per_s * len(shape) / sum(shape)

    def rate_at(t: float) -> float:
        position = (t % 86_400.0) / 3600.0 - 0.5
        hour = math.floor(position)
        frac = position - hour
        return scale * ((1.0 - frac) * shape[hour % 24] + frac * shape[(hour + 1) % 24])

    return rate_at


def build_trace(kind: str, *, seed: int, hours: float, rate_per_min: float = 3.0,
                lengths: SessionLengths = SessionLengths()) -> Trace:
    """A synthetic trace of the given kind (one of :data:`TRACE_KINDS`), starting at t = 0."""
    if not hours > 0:
        raise ValueError(f"hours must be > 0 (got {hours!r})")
    if not rate_per_min > 0:
        raise ValueError(f"rate_per_min must be > 0 (got {rate_per_min!r})")
    end_s = hours * 3600.0
    mean_rate = rate_per_min / 60.0
    rng = _stream(seed, kind, "arrivals")
    if kind == "poisson":
        arrivals = poisson_arrivals(mean_rate, 0.0, end_s, rng)
    elif kind == "bursty":
        mean_calm_s, mean_burst_s, intensity = 25 * 60.0, 4 * 60.0, 6.0
        burst_share = mean_burst_s / (mean_calm_s + mean_burst_s)
        calm_rate = mean_rate / (1.0 + (intensity - 1.0) * burst_share)
        arrivals = mmpp_arrivals(calm_rate, intensity * calm_rate, mean_calm_s, mean_burst_s, 0.0, end_s, rng)
    elif kind == "diurnal":
        rate_at = diurnal_rate(mean_rate)
        peak = mean_rate * 24 * max(DIURNAL_SHAPE) / sum(DIURNAL_SHAPE)
        arrivals = thinned_arrivals(rate_at, peak, 0.0, end_s, rng)
    else:
        raise ValueError(f"trace kind {kind!r} is unknown (known: {', '.join(TRACE_KINDS)})")
    return _with_lengths(kind, arrivals, 0.0, end_s, lengths, seed)


def parse_start_times(text: str, source: str = "<text>") -> list[float]:
    """Session start times from a JSON list of numbers, or one number per line.

    ValueError names the source, the line and the value that could not be read.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{source}: no session start times")
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        times = []
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{source}: item {index} is not a unix timestamp (got {value!r})")
            times.append(float(value))
    else:
        times = []
        for lineno, line in enumerate(stripped.splitlines(), start=1):
            cell = line.split("#", 1)[0].split(",", 1)[0].strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                if not times and lineno == 1:  # a header line
                    continue
                raise ValueError(f"{source}: line {lineno} is not a unix timestamp (got {cell!r})") from None
            if not math.isfinite(value):
                raise ValueError(f"{source}: line {lineno} is not a unix timestamp (got {cell!r})")
            times.append(value)
    if not times:
        raise ValueError(f"{source}: no session start times")
    return sorted(times)


def replay_trace(path: str | Path, *, seed: int, lengths: SessionLengths = SessionLengths(),
                 hours: float | None = None) -> Trace:
    """A trace of the recorded start times in ``path`` (unix seconds; lengths drawn from
    ``lengths``, since the file holds start times only). It runs from the first start to the
    last, or for ``hours`` from the first start if given."""
    path = Path(path)
    times = parse_start_times(path.read_text(encoding="utf-8"), source=str(path))
    start_s = times[0]
    end_s = start_s + hours * 3600.0 if hours is not None else times[-1] + 1.0
    kept = [t for t in times if t < end_s]
    return _with_lengths("replay", kept, start_s, end_s, lengths, seed)
