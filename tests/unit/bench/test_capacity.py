"""The capacity calibration's decisions (bench/capacity.py), pure."""

from voxfleet.bench.capacity import profile_for, served_well


def level(p95: float, failed: int = 0) -> dict:
    return {"v2v_ms": {"p50": p95 * 0.8, "p95": p95, "n": 4}, "failed": failed}


def test_the_count_stops_at_the_first_level_past_the_goal_or_with_a_failure():
    assert served_well({1: level(1000), 2: level(1290), 3: level(1500), 4: level(1200)}) == 2
    assert served_well({1: level(1000), 2: level(1100, failed=1), 3: level(1000)}) == 1
    assert served_well({1: level(1000)}) == 1
    assert served_well({1: level(1000, failed=1)}) == 0 and served_well({}) == 0


def test_the_profile_admits_no_more_calls_than_are_served_well():
    assert profile_for(2000, 4) == ("agent-1x", 4)
    assert profile_for(2000, 3) == ("agent-2x", 2)  # no profile admits exactly 3: fewer, never more
    assert profile_for(2000, 2) == ("agent-2x", 2)
    assert profile_for(2000, 1) == ("agent-3x", 1)
    assert profile_for(4000, 1) == (None, 0)  # even agent-3x lets 2 in
    assert profile_for(2000, 0) == (None, 0)
