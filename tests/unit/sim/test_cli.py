"""`voxfleet simulate` (sim/cli.py): JSON and table output, the plot, replayed files."""

from __future__ import annotations

import argparse
import json

from tests.unit.sim.test_report import METRIC_KEYS
from voxfleet.sim.cli import add_simulate_parser
from voxfleet.sim.policies import POLICY_NAMES
from voxfleet.sim.traces import TRACE_KINDS


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


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
