"""Capacity profiles and ledger (scheduler/capacity.py): plain asserts and property-based tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxfleet.scheduler.capacity import PROFILES, CapacityLedger, Resources, profile_named

ONE_X = PROFILES["agent-1x"].resources


def test_profiles_match_pipecat_cloud():
    assert PROFILES["agent-1x"].resources == Resources(500, 1024, 40)
    assert PROFILES["agent-2x"].resources == Resources(1000, 2048, 40)
    assert PROFILES["agent-3x"].resources == Resources(1500, 3072, 40)
    assert profile_named("agent-1x", kbps=100).resources.kbps == 100
    with pytest.raises(ValueError, match="unknown profile 'agent-9x'"):
        profile_named("agent-9x")


def test_ledger_never_overcommits_and_releases_once():
    ledger = CapacityLedger(Resources(2000, 24000, 100_000))
    assert ledger.how_many_fit(ONE_X) == 4
    for key in "abcd":
        assert ledger.reserve(key, ONE_X)
    assert not ledger.reserve("e", ONE_X)  # CPU is the bound
    assert ledger.free.cpu_millis == 0 and ledger.check()
    assert ledger.release("a") and not ledger.release("a")
    assert ledger.reserve("e", ONE_X) and ledger.check()
    with pytest.raises(ValueError, match="already exists"):
        ledger.reserve("e", ONE_X)


def test_bandwidth_can_be_the_bound():
    ledger = CapacityLedger(Resources(100_000, 100_000, 100))
    assert ledger.how_many_fit(ONE_X) == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["start", "warm", "end", "crash", "kill", "timeout", "drain"]),
                          st.sampled_from(list(PROFILES)), st.integers(0, 30)), max_size=120))
def test_random_event_sequences_keep_the_invariant(events):
    """Whatever happens to bots (ended normally, crashed, killed, timed out, drained), the ledger
    never exceeds capacity, releases each reservation once, and free + reserved == capacity."""
    capacity = Resources(2000, 8192, 1000)
    ledger = CapacityLedger(capacity)
    live: list[str] = []
    next_id = 0
    for kind, profile, pick in events:
        if kind in ("start", "warm"):
            key = f"bot{next_id}"
            next_id += 1
            fits = ledger.can_reserve(PROFILES[profile].resources)
            assert ledger.reserve(key, PROFILES[profile].resources) == fits
            if fits:
                live.append(key)
        elif kind == "drain":
            for key in live:
                assert ledger.release(key)
            live.clear()
        elif live:
            key = live.pop(pick % len(live))
            assert ledger.release(key)
            assert not ledger.release(key)  # the second release of any end is a no-op
        assert ledger.check()
        assert ledger.reserved.fits_in(capacity)
        assert len(ledger) == len(live)
    for key in live:
        ledger.release(key)
    assert ledger.free == capacity and ledger.reserved == Resources()
