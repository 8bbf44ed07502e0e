"""The warm-pool policy and the admission queue (scheduler/pool.py)."""

from __future__ import annotations

from voxfleet.scheduler.pool import AdmissionQueue, WarmPoolPolicy


def test_pool_target():
    policy = WarmPoolPolicy(min_warm=1, warm_pct=50, max_bots=10)
    assert policy.target(active=0, fits_more=4, warm=0) == 1
    assert policy.target(active=4, fits_more=4, warm=0) == 2  # 50% of 4 active
    assert policy.target(active=4, fits_more=0, warm=1) == 1  # no capacity for more
    assert policy.target(active=10, fits_more=4, warm=0) == 0  # at max_bots
    assert WarmPoolPolicy(min_warm=0).target(active=3, fits_more=4, warm=0) == 0


def test_queue_positions_and_bound():
    queue = AdmissionQueue(max_length=2)
    assert queue.push("s1", "a") == 1 and queue.push("s2", "b") == 2
    assert queue.push("s3", "a") is None
    assert queue.position("s2") == 2 and queue.by_agent() == {"a": 1, "b": 1}
    assert queue.remove("s1") and queue.position("s2") == 1
    assert queue.head() == ("s2", "b") and not queue.remove("s1")
