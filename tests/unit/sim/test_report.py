"""The simulator's report (sim/report.py)."""

from __future__ import annotations

from voxfleet.sim.policies import PolicySettings
from voxfleet.sim.report import compare, to_json
from voxfleet.sim.traces import build_trace

METRIC_KEYS = {"cold_start_pct", "p95_wait_s", "idle_bot_seconds", "peak_reserved"}


def test_to_json_rounds_and_keeps_only_the_four_metrics():
    comparison = compare([build_trace("poisson", seed=1, hours=1)], PolicySettings(capacity=10),
                         policies=["voxfleet"])
    metrics = to_json(comparison)["traces"]["poisson"]["voxfleet"]
    assert set(metrics) == METRIC_KEYS and isinstance(metrics["peak_reserved"], int)
