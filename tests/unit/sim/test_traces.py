"""Warm-pool simulator traces (sim/traces.py): seeds, rates, lengths, replayed start times."""

from __future__ import annotations

import json

import pytest

from voxfleet.sim.engine import simulate
from voxfleet.sim.policies import PolicySettings, build_policy
from voxfleet.sim.traces import (
    TRACE_KINDS,
    SessionLengths,
    build_trace,
    diurnal_rate,
    parse_start_times,
    replay_trace,
)


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
