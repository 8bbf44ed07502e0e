"""Warm-pool simulator: traces, the event engine, invariants (hypothesis), CLI output."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxfleet.sim.cli import add_simulate_parser
from voxfleet.sim.engine import PoolState, simulate
from voxfleet.sim.policies import POLICY_NAMES, PolicySettings, build_policy
from voxfleet.sim.report import compare, to_json
from voxfleet.sim.traces import (
    TRACE_KINDS,
    SessionLengths,
    Trace,
    build_trace,
    diurnal_rate,
    parse_start_times,
    replay_trace,
)

METRIC_KEYS = {"cold_start_pct", "p95_wait_s", "idle_bot_seconds", "peak_reserved"}


@dataclass
class FixedTarget:
    """A policy that asks for ``wanted`` bots whatever happens (even absurd numbers)."""

    wanted: int
    refill_s: float = 1.0
    refill_concurrency: int | None = None
    name: str = "fixed_target"

    def on_arrival(self, now: float) -> None:
        pass

    def target(self, state: PoolState) -> int:
        return self.wanted


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


# -- traces ------------------------------------------------------------------------------------

def test_same_seed_same_trace_and_other_seed_other_trace():
    for kind in TRACE_KINDS:
        assert build_trace(kind, seed=1, hours=2) == build_trace(kind, seed=1, hours=2)
        assert build_trace(kind, seed=1, hours=2).arrivals != build_trace(kind, seed=2, hours=2).arrivals


def test_traces_have_their_mean_rate():
    for kind in TRACE_KINDS:
        trace = build_trace(kind, seed=3, hours=48, rate_per_min=3.0)
        assert len(trace) == pytest.approx(3.0 * 60 * 48, rel=0.1), kind


def test_diurnal_profile_is_quiet_at_night_and_averages_the_mean():
    rate_at = diurnal_rate(1.0)
    assert rate_at(3.5 * 3600) < 0.1 < 1.5 < rate_at(11.5 * 3600)
    samples = [rate_at(t * 60.0) for t in range(24 * 60)]
    assert sum(samples) / len(samples) == pytest.approx(1.0, rel=0.01)


def test_session_lengths_are_lognormal_around_the_median_and_capped():
    trace = build_trace("poisson", seed=4, hours=24, lengths=SessionLengths(median_s=150, sigma=0.7, max_s=900))
    ordered = sorted(trace.durations)
    assert ordered[len(ordered) // 2] == pytest.approx(150, rel=0.1)
    assert max(ordered) <= 900


def test_start_times_parse_from_json_and_lines():
    assert parse_start_times("[3, 1.5, 2]") == [1.5, 2.0, 3.0]
    assert parse_start_times("ts\n1700000000\n\n# comment\n1700000005,extra\n") == [1.7e9, 1.7e9 + 5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no session start times"),
        ("[1, \"x\"]", r"item 1 is not a unix timestamp \(got 'x'\)"),
        ("[1, 2", "invalid JSON"),
        ("1\n2\nnope\n", r"line 3 is not a unix timestamp \(got 'nope'\)"),
        ("header only\n", "no session start times"),
    ],
)
def test_bad_start_times_name_the_place(text, message):
    with pytest.raises(ValueError, match=message):
        parse_start_times(text, source="calls.csv")


def test_replay_reads_a_file(tmp_path):
    path = tmp_path / "starts.json"
    path.write_text(json.dumps([1_700_000_000 + 30 * i for i in range(100)]))
    trace = replay_trace(path, seed=1)
    assert trace.name == "replay" and len(trace) == 100
    assert trace.start_s == 1_700_000_000 and trace.end_s > trace.arrivals[-1]
    result = simulate(trace, build_policy("voxfleet", PolicySettings(capacity=8)), capacity=8)
    assert result.sessions == 100


# -- the engine ----------------------------------------------------------------------------------

def test_hand_computed_run():
    """Capacity 2, one warm bot wanted, 1 s refill. t=0: a bot starts warming (ready t=1).
    t=2: A takes it (warm); a refill starts (ready t=3). t=2.5: B finds no warm bot and no free
    slot: queued. t=3: the refill is ready and B takes it after 0.5 s. t=12: A ends; a new bot
    warms (ready t=13). t=13: B ends, the bot is ready and idles to t=100."""
    trace = Trace("hand", (2.0, 2.5), (10.0, 10.0), 0.0, 100.0)
    result = simulate(trace, FixedTarget(wanted=1, refill_s=1.0), capacity=2)
    assert (result.sessions, result.warm_starts, result.cold_starts, result.queued) == (2, 1, 1, 1)
    assert result.waits_s == [0.0, 0.5]
    assert result.peak_reserved == 2
    assert result.idle_bot_seconds == pytest.approx(1.0 + 87.0)
    assert result.bots_warmed == 3


def test_cold_start_waits_the_refill_time_when_a_slot_is_free():
    trace = Trace("cold", (1.0,), (5.0,), 0.0, 10.0)
    result = simulate(trace, FixedTarget(wanted=0, refill_s=1.5), capacity=3)
    assert result.cold_starts == 1 and result.queued == 0 and result.waits_s == [1.5]
    assert result.idle_bot_seconds == 0.0


def test_same_seed_gives_identical_results_for_every_policy():
    def run() -> dict:
        traces = [build_trace(kind, seed=9, hours=3) for kind in TRACE_KINDS]
        comparison = compare(traces, PolicySettings(capacity=20), timeline_step_s=60.0)
        return {trace: {policy: (r.waits_s, r.idle_bot_seconds, r.bots_warmed, r.timeline)
                        for policy, r in runs.items()} for trace, runs in comparison.items()}

    assert run() == run()


trace_strategy = st.builds(
    lambda gaps, lengths: Trace(
        "random",
        tuple(sum(gaps[: i + 1]) for i in range(len(gaps))),
        tuple(lengths[: len(gaps)]) + (1.0,) * max(0, len(gaps) - len(lengths)),
        0.0,
        sum(gaps) + 50.0,
    ),
    st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=0, max_size=60),
    st.lists(st.floats(min_value=0.0, max_value=120.0), min_size=0, max_size=60),
)


@st.composite
def policy_strategy(draw):
    name = draw(st.sampled_from(POLICY_NAMES + ("absurd",)))
    refill_s = draw(st.sampled_from([0.0, 0.5, 1.0, 5.0, 30.0]))
    concurrency = draw(st.sampled_from([None, 1, 2, 3]))
    if name == "absurd":
        return FixedTarget(draw(st.sampled_from([-5, 0, 10**6])), refill_s, concurrency)
    capacity = draw(st.integers(min_value=1, max_value=6))
    policy_settings = PolicySettings(capacity=capacity, refill_s=refill_s, refill_concurrency=concurrency,
                                     pcc_refill_s=refill_s, fixed_warm=draw(st.integers(0, 8)),
                                     warm_pct=draw(st.sampled_from([0.0, 50.0, 200.0])))
    return build_policy(name, policy_settings)


@settings(max_examples=300, deadline=None)
@given(trace=trace_strategy, policy=policy_strategy(), capacity=st.integers(min_value=1, max_value=6))
def test_the_pool_never_exceeds_capacity(trace, policy, capacity):
    seen: list[PoolState] = []

    def observe(state: PoolState) -> None:
        assert state.active + state.warm + state.warming <= state.capacity == capacity
        assert min(state.active, state.warm, state.warming, state.queued) >= 0
        assert not (state.queued and state.warm)  # nobody waits while a warm bot idles
        seen.append(state)

    result = simulate(trace, policy, capacity=capacity, tick_s=2.0, observer=observe)
    assert result.peak_reserved <= capacity
    assert result.warm_starts + result.cold_starts == result.sessions == len(trace)
    assert len(result.waits_s) <= result.sessions and all(w >= 0 for w in result.waits_s)
    assert result.idle_bot_seconds <= capacity * (trace.end_s - trace.start_s) + 1e-6
    assert len(seen) >= len(trace)


# -- the CLI -----------------------------------------------------------------------------------

def test_json_output_is_one_object_with_the_agreed_keys(capsys):
    assert run_cli("--hours", "1", "--json") == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert set(report) == {"traces"}
    assert set(report["traces"]) == set(TRACE_KINDS)
    for runs in report["traces"].values():
        assert set(runs) == set(POLICY_NAMES)
        for metrics in runs.values():
            assert set(metrics) == METRIC_KEYS


def test_table_output_and_plot(tmp_path, capsys):
    path = tmp_path / "pool.png"
    assert run_cli("--hours", "1", "--traces", "bursty,diurnal", "--plot", str(path)) == 0
    out = capsys.readouterr().out
    assert "bursty:" in out and "diurnal:" in out and "goal on bursty" in out
    assert "p95 wait s" in out and "peak reserved" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_option_and_bad_file(tmp_path, capsys):
    good = tmp_path / "starts.csv"
    good.write_text("\n".join(str(1_700_000_000 + 20 * i) for i in range(50)))
    assert run_cli("--traces", "", "--replay", str(good), "--json") == 0
    assert set(json.loads(capsys.readouterr().out)["traces"]) == {"replay"}
    bad = tmp_path / "bad.csv"
    bad.write_text("1700000000\nsoon\n")
    assert run_cli("--traces", "", "--replay", str(bad)) == 2
    assert "line 2 is not a unix timestamp" in capsys.readouterr().err


def test_to_json_rounds_and_keeps_only_the_four_metrics():
    comparison = compare([build_trace("poisson", seed=1, hours=1)], PolicySettings(capacity=10),
                         policies=["voxfleet"])
    metrics = to_json(comparison)["traces"]["poisson"]["voxfleet"]
    assert set(metrics) == METRIC_KEYS and isinstance(metrics["peak_reserved"], int)
