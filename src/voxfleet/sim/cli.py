"""``voxfleet simulate``: compare warm-pool policies on simulated (or recorded) traffic.

:func:`add_simulate_parser` adds the subcommand to an argparse subparsers object; the command
prints one table per trace, or with ``--json`` exactly one JSON object
``{"traces": {trace: {policy: {cold_start_pct, p95_wait_s, idle_bot_seconds, peak_reserved}}}}``,
and with ``--plot PATH.png`` also draws demand vs pool over time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from voxfleet.exceptions import ExtraNotInstalled
from voxfleet.extras import require_extra
from voxfleet.sim.policies import POLICY_NAMES, PolicySettings
from voxfleet.sim.report import compare, format_report, plot, to_json
from voxfleet.sim.traces import TRACE_KINDS, SessionLengths, Trace, build_trace, replay_trace

log = logging.getLogger(__name__)

PLOT_STEP_S = 60.0
Number = TypeVar("Number", int, float)


def _names(known: tuple[str, ...], what: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names from ``known``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        return names

    return parse


def _bounded(kind: Callable[[str], Number], *, minimum: float, strict: bool = False) -> Callable[[str], Number]:
    """An argparse type: a number of ``kind`` that is >= ``minimum`` (> if ``strict``)."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g} (got {text})")
        return value

    return parse


def add_simulate_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` subcommand (``func(args) -> exit code``) to ``subparsers``."""
    p = subparsers.add_parser(
        "simulate", help="compare warm-pool policies on simulated or recorded session traffic",
        description="Seeded discrete-event simulation of session arrivals on one node, with each "
                    "warm-pool policy side by side: cold starts, waits, idle bot-seconds, peak reserved.")
    p.add_argument("--seed", type=int, default=7, help="random seed of the traces (default 7)")
    p.add_argument("--hours", type=_bounded(float, minimum=0, strict=True), default=48.0,
                   help="simulated hours per synthetic trace (default 48: the diurnal trace's "
                        "second day is forecast with a seasonal profile)")
    p.add_argument("--capacity", type=_bounded(int, minimum=1), default=64,
                   help="bots the node holds at once, warm + warming + active (default 64)")
    p.add_argument("--traces", type=_names(TRACE_KINDS, "trace"), default=list(TRACE_KINDS),
                   help=f"comma-separated synthetic traces (default {','.join(TRACE_KINDS)}; '' for none)")
    p.add_argument("--replay", metavar="FILE",
                   help="also replay recorded session start times: a JSON list of unix timestamps or "
                        "one timestamp per line")
    p.add_argument("--policies", type=_names(POLICY_NAMES, "policy"), default=list(POLICY_NAMES),
                   help=f"comma-separated policies (default {','.join(POLICY_NAMES)})")
    p.add_argument("--rate-per-min", type=_bounded(float, minimum=0, strict=True), default=3.0,
                   help="mean session starts per minute of the synthetic traces (default 3)")
    p.add_argument("--session-median-s", type=_bounded(float, minimum=0, strict=True), default=150.0,
                   help="median session length, lognormal (default 150 s)")
    p.add_argument("--session-sigma", type=_bounded(float, minimum=0), default=0.7,
                   help="log-space sigma of session lengths (default 0.7)")
    p.add_argument("--refill-s", type=_bounded(float, minimum=0), default=1.0,
                   help="seconds a new warm bot (or a cold start) takes here (default 1: measured "
                        "fork + init)")
    p.add_argument("--pcc-refill-s", type=_bounded(float, minimum=0), default=30.0,
                   help="seconds a new idle agent takes on Pipecat Cloud, for pcc_buffer (default 30)")
    p.add_argument("--refill-concurrency", type=_bounded(int, minimum=0), default=1,
                   help="warm bots initialised at once (default 1, as voxfleet's setting; 0: no limit)")
    p.add_argument("--target-cold-pct", type=_bounded(float, minimum=0, strict=True), default=1.0,
                   help="voxfleet's target cold-start probability, in %% (default 1)")
    p.add_argument("--forecast-z", type=_bounded(float, minimum=0), default=2.0,
                   help="sigmas of Poisson noise voxfleet's planning rate allows for (default 2)")
    p.add_argument("--min-warm", type=_bounded(int, minimum=0), default=1,
                   help="min_warm of percentage and voxfleet (default 1)")
    p.add_argument("--warm-pct", type=_bounded(float, minimum=0), default=25.0,
                   help="warm_pct of the percentage policy (default 25)")
    p.add_argument("--fixed-warm", type=_bounded(int, minimum=0), default=4,
                   help="warm bots of fixed_min (default 4)")
    p.add_argument("--pcc-min-agents", type=_bounded(int, minimum=0), default=1,
                   help="min_agents of pcc_buffer (default 1)")
    p.add_argument("--cpus", type=_bounded(float, minimum=0, strict=True), default=None,
                   help="CPUs LiveKit counts for livekit_idle (default: capacity x 0.5, agent-1x)")
    p.add_argument("--load-threshold", type=_bounded(float, minimum=0, strict=True), default=0.7,
                   help="LiveKit's load_threshold (default 0.7)")
    p.add_argument("--tick-s", type=_bounded(float, minimum=0, strict=True), default=5.0,
                   help="policies are re-consulted after this long without events (default 5 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", metavar="PATH.png", help="draw demand vs pool over time per trace")
    p.set_defaults(func=run_simulate)


def settings_from(args: argparse.Namespace) -> PolicySettings:
    return PolicySettings(
        capacity=args.capacity, refill_s=args.refill_s,
        refill_concurrency=args.refill_concurrency or None, pcc_refill_s=args.pcc_refill_s,
        fixed_warm=args.fixed_warm, pcc_min_agents=args.pcc_min_agents, cpus=args.cpus,
        load_threshold=args.load_threshold, min_warm=args.min_warm, warm_pct=args.warm_pct,
        target_cold_pct=args.target_cold_pct, forecast_z=args.forecast_z)


def traces_from(args: argparse.Namespace) -> list[Trace]:
    lengths = SessionLengths(median_s=args.session_median_s, sigma=args.session_sigma)
    traces = [build_trace(kind, seed=args.seed, hours=args.hours, rate_per_min=args.rate_per_min,
                          lengths=lengths) for kind in args.traces]
    if args.replay:
        traces.append(replay_trace(args.replay, seed=args.seed, lengths=lengths))
    if not traces:
        raise ValueError("no traces to simulate: give --traces or --replay")
    if not args.policies:
        raise ValueError("no policies to compare: give --policies")
    return traces


def run_simulate(args: argparse.Namespace) -> int:
    """The ``simulate`` command: 0 on success, 2 on bad input."""
    try:
        settings = settings_from(args)
        traces = traces_from(args)
        if args.plot:
            require_extra("plots", "--plot")  # before the simulation, not after it
    except (ValueError, OSError, ExtraNotInstalled) as exc:
        print(f"voxfleet simulate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    comparison = compare(traces, settings, policies=args.policies, tick_s=args.tick_s,
                         timeline_step_s=PLOT_STEP_S if args.plot else None)
    log.info("simulated %d traces x %d policies in %.1f s", len(traces), len(args.policies),
             time.perf_counter() - started)
    if args.json:
        print(json.dumps(to_json(comparison)))
    else:
        print(format_report(comparison, settings, seed=args.seed))
    if args.plot:
        try:
            plot(comparison, args.plot)
        except OSError as exc:
            print(f"voxfleet simulate: cannot write the plot: {exc}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"\nplot: {args.plot}")
    return 0
