"""Per-client bounds: the rate bucket, not-yet-connected sessions, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxfleet.scheduler.client_bounds import ClientBounds, ClientBoundsSettings, retry_after_s


def test_a_burst_then_the_refill_rate():
    bounds = ClientBounds(ClientBoundsSettings(rate_per_s=2.0, burst=3))
    assert [bounds.take("1.2.3.4", 0.0) for _ in range(3)] == [None, None, None]
    wait = bounds.take("1.2.3.4", 0.0)
    assert wait == pytest.approx(0.5) and retry_after_s(wait) == 1
    assert bounds.take("5.6.7.8", 0.0) is None  # another client is not affected
    assert bounds.take("1.2.3.4", 0.5) is None  # one token back after 1 / rate
    assert bounds.take("1.2.3.4", 0.5) is not None


def test_not_yet_connected_sessions_are_capped_and_freed_once():
    bounds = ClientBounds(ClientBoundsSettings(max_pending=2))
    bounds.started("key:abc", "s1")
    bounds.started("key:abc", "s2")
    assert not bounds.may_start("key:abc") and bounds.may_start("10.0.0.1")
    bounds.connected("s1")
    bounds.connected("s1")  # twice: still counted once
    assert bounds.pending("key:abc") == 1 and bounds.may_start("key:abc")
    bounds.ended("s2")
    bounds.ended("unknown")
    assert bounds.pending("key:abc") == 0


def test_memory_is_bounded_by_forgetting_the_longest_idle_client():
    bounds = ClientBounds(ClientBoundsSettings(burst=1, max_clients=2))
    bounds.take("a", 0.0)
    bounds.take("b", 0.0)
    bounds.take("a", 0.0)  # a is empty and recent; b is the longest idle
    bounds.take("c", 0.0)
    assert bounds.clients() == 2
    assert bounds.take("a", 0.0) is not None  # still remembered: still empty


def test_settings_are_checked():
    with pytest.raises(ValueError):
        ClientBoundsSettings(rate_per_s=0)
    with pytest.raises(ValueError):
        ClientBoundsSettings(max_pending=0)


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=60),
       rate=st.floats(min_value=0.1, max_value=20), burst=st.integers(1, 10))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps, rate, burst):
    bounds = ClientBounds(ClientBoundsSettings(rate_per_s=rate, burst=burst))
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        wait = bounds.take("x", now)
        allowed += wait is None
        assert wait is None or 0 < wait <= 1 / rate + 1e-9
    assert allowed <= burst + rate * now + 1e-6
