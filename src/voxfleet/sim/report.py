"""Run every policy on every trace and report the comparison: table, JSON, plot.

The metrics, per policy per trace:

- ``cold_start_pct``: sessions that found no warm bot on arrival (cold-started at once, or
  queued for a slot first), in % of all sessions.
- ``p95_wait_s``: 95th percentile of the time from the session's arrival until its bot is
  ready (0 for a warm start; the refill time for a cold start; plus any time queued).
- ``idle_bot_seconds``: the integral over time of warm bots that are ready and unused — what a
  warm pool costs. Bots still initialising are not counted (Pipecat Cloud does not bill them).
- ``peak_reserved``: the most slots held at once: active + warm + warming, never above the
  node's capacity.

The goal checked (issue 7): on the bursty and diurnal traces, ``voxfleet`` has at most the
target cold-start percentage (1 %) and at most half the idle bot-seconds of ``pcc_buffer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voxfleet.extras import require_extra
from voxfleet.sim.engine import RunResult, simulate
from voxfleet.sim.policies import POLICY_NAMES, PolicySettings, build_policy
from voxfleet.sim.traces import Trace

GOAL_TRACES = ("bursty", "diurnal")
GOAL_IDLE_RATIO = 0.5
BASELINE = "pcc_buffer"
CANDIDATE = "voxfleet"

Comparison = dict[str, dict[str, RunResult]]  # trace name -> policy name -> result


def compare(traces: Iterable[Trace], settings: PolicySettings, *,
            policies: Iterable[str] = POLICY_NAMES, tick_s: float = 5.0,
            timeline_step_s: float | None = None) -> Comparison:
    """Each policy, fresh, on each trace, on a node of ``settings.capacity`` slots."""
    names = tuple(policies)
    return {
        trace.name: {
            name: simulate(trace, build_policy(name, settings), capacity=settings.capacity,
                           tick_s=tick_s, timeline_step_s=timeline_step_s)
            for name in names
        }
        for trace in traces
    }


def metrics(result: RunResult) -> dict[str, float | int]:
    """The four reported numbers of one run, rounded for display and JSON."""
    return {
        "cold_start_pct": round(result.cold_start_pct, 3),
        "p95_wait_s": round(result.p95_wait_s, 3),
        "idle_bot_seconds": round(result.idle_bot_seconds, 1),
        "peak_reserved": result.peak_reserved,
    }


def to_json(comparison: Comparison) -> dict[str, dict[str, dict[str, dict[str, float | int]]]]:
    """``{"traces": {trace: {policy: metrics}}}``."""
    return {"traces": {trace: {policy: metrics(r) for policy, r in runs.items()}
                       for trace, runs in comparison.items()}}


@dataclass(frozen=True)
class GoalVerdict:
    """Whether ``voxfleet`` met the goal on one trace."""

    trace: str
    cold_start_pct: float
    idle_ratio: float  # voxfleet's idle bot-seconds over pcc_buffer's
    target_cold_pct: float

    @property
    def met(self) -> bool:
        return self.cold_start_pct <= self.target_cold_pct and self.idle_ratio <= GOAL_IDLE_RATIO

    def describe(self) -> str:
        return (f"goal on {self.trace} (voxfleet <= {self.target_cold_pct:g}% cold starts with <= "
                f"{GOAL_IDLE_RATIO:.0%} of pcc_buffer's idle bot-seconds): "
                f"{'MET' if self.met else 'NOT MET'} "
                f"({self.cold_start_pct:.2f}% cold, {self.idle_ratio:.0%} of the idle bot-seconds)")


def goal_verdicts(comparison: Comparison, target_cold_pct: float) -> list[GoalVerdict]:
    """Verdicts for the goal traces that were run with both policies."""
    verdicts = []
    for trace in GOAL_TRACES:
        runs = comparison.get(trace, {})
        if CANDIDATE not in runs or BASELINE not in runs:
            continue
        ours, theirs = runs[CANDIDATE], runs[BASELINE]
        ratio = (ours.idle_bot_seconds / theirs.idle_bot_seconds if theirs.idle_bot_seconds
                 else float("inf") if ours.idle_bot_seconds else 0.0)
        verdicts.append(GoalVerdict(trace, ours.cold_start_pct, ratio, target_cold_pct))
    return verdicts


_COLUMNS = (("policy", 12), ("cold %", 8), ("queued %", 10), ("p95 wait s", 12), ("idle bot-s", 12),
            ("vs pcc", 8), ("mean idle", 11), ("peak reserved", 15), ("bots warmed", 13))


def format_table(runs: dict[str, RunResult]) -> str:
    """One trace's runs as a fixed-width table."""
    baseline = runs.get(BASELINE)
    header = "".join(name.ljust(width) if i == 0 else name.rjust(width)
                     for i, (name, width) in enumerate(_COLUMNS))
    lines = [header, "-" * len(header)]
    for name, r in runs.items():
        ratio = (f"{r.idle_bot_seconds / baseline.idle_bot_seconds:.2f}"
                 if baseline is not None and baseline.idle_bot_seconds else "-")
        cells = (name, f"{r.cold_start_pct:.2f}", f"{r.queued_pct:.2f}", f"{r.p95_wait_s:.2f}",
                 f"{r.idle_bot_seconds:,.0f}", ratio, f"{r.mean_idle_bots:.2f}", str(r.peak_reserved),
                 f"{r.bots_warmed:,}")
        lines.append("".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                             for i, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS))))
    return "\n".join(lines)


def format_report(comparison: Comparison, settings: PolicySettings, *, seed: int) -> str:
    """Every trace's table under a one-line description, then the goal verdicts."""
    concurrency = ("no limit" if settings.refill_concurrency is None
                   else f"{settings.refill_concurrency} at a time")
    blocks = []
    for trace, runs in comparison.items():
        any_run = next(iter(runs.values()))
        blocks.append(
            f"{trace}: {any_run.sessions:,} sessions in {any_run.hours:.1f} h, seed {seed}, node capacity "
            f"{settings.capacity} bots; refill {settings.refill_s:g} s ({concurrency}), pcc_buffer "
            f"{settings.pcc_refill_s:g} s (no limit)\n" + format_table(runs))
    verdicts = goal_verdicts(comparison, settings.target_cold_pct)
    if verdicts:
        blocks.append("\n".join(v.describe() for v in verdicts))
    return "\n\n".join(blocks)


def plot(comparison: Comparison, path: str) -> None:
    """Demand (active sessions) and each policy's pool (warm + warming) over time, one panel
    per trace, to a PNG. Needs runs made with ``timeline_step_s``."""
    require_extra("plots", "plotting a simulation")
    # The Agg canvas directly, not pyplot: no global backend switch, no GUI, nothing left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    traces = list(comparison.items())
    figure = Figure(figsize=(15, 3.6 * len(traces)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(traces), 1, squeeze=False)
    for row, (trace, runs) in enumerate(traces):
        ax = axes[row][0]
        reference = runs.get(CANDIDATE) or next(iter(runs.values()))
        if not reference.timeline:
            raise ValueError("plot: the runs have no timeline (simulate with timeline_step_s)")
        start = reference.timeline[0].t
        hours = [(p.t - start) / 3600.0 for p in reference.timeline]
        ax.fill_between(hours, [p.active for p in reference.timeline], step="post", color="0.85",
                        label="demand: active sessions")
        for name, result in runs.items():
            ax.step([(p.t - start) / 3600.0 for p in result.timeline],
                    [p.warm + p.warming for p in result.timeline], where="post", linewidth=0.9,
                    label=f"{name} pool ({result.cold_start_pct:.2f}% cold)")
        ax.set_title(f"{trace}: demand vs warm pool (warm + warming bots)")
        ax.set_xlabel("hours")
        ax.set_ylabel("bots")
        if hours[-1] > hours[0]:
            ax.set_xlim(hours[0], hours[-1])
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
