"""The pure placement core: per-node ledgers, region preference and fallback, node loss."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxfleet.exceptions import Unplaceable
from voxfleet.scheduler.capacity import Resources
from voxfleet.scheduler.placement import ClusterLedger, Node, Start, choose_start

BOT = Resources(500, 1024, 40)


def cluster(**nearest) -> ClusterLedger:
    return ClusterLedger([
        Node("eu-1", "eu", "10.0.0.1", Resources(1000, 4096, 1000)),
        Node("eu-2", "eu", "10.0.0.2", Resources(500, 4096, 1000)),
        Node("us-1", "us", "10.0.1.1", Resources(2000, 8192, 1000)),
        Node("ap-1", "ap", "10.0.2.1", Resources(500, 512, 1000)),
    ], nearest=nearest)


def test_preference_asked_region_first_then_configured_fallbacks():
    ledger = cluster(eu=["us"])
    assert ledger.preference("eu") == ["eu", "us"]  # ap is not near eu: never used for it
    assert ledger.preference("us") == ["us", "ap", "eu"]  # no fallbacks configured: every other region
    assert ledger.preference(None) == ["ap", "eu", "us"]


def test_unknown_region_is_unplaceable_and_names_the_known_ones():
    with pytest.raises(Unplaceable) as error:
        cluster().preference("mars")
    assert str(error.value) == "region: no node in region 'mars' (regions now: ap, eu, us)"
    assert error.value.code == "UNPLACEABLE" and error.value.region == "mars"


def test_reserve_spreads_within_the_region_then_falls_back():
    ledger = cluster(eu=["us"])
    placed = [ledger.reserve(f"b{i}", BOT, ledger.preference("eu")) for i in range(5)]
    assert [n.node_id for n in placed[:3]] == ["eu-1", "eu-2", "eu-1"]  # most free CPU first
    assert [n.node_id for n in placed[3:]] == ["us-1", "us-1"]  # eu full: its nearest region
    assert ledger.how_many_fit(BOT, "eu") == 0 and ledger.how_many_fit(BOT, "us") == 2
    assert ledger.check()
    snap = ledger.snapshot()
    assert snap["regions"]["eu"]["free"]["cpu_millis"] == 0 and snap["regions"]["eu"]["reservations"] == 3
    assert snap["nodes"]["us-1"]["reserved"]["cpu_millis"] == 1000
    assert snap["reservations"] == 5 and snap["free"]["cpu_millis"] == 1000 + 500


def test_could_ever_fit_looks_at_empty_node_sizes():
    ledger = cluster()
    assert not ledger.could_ever_fit(Resources(500, 1024, 40), ["ap"])  # ap has 512 MiB
    assert ledger.could_ever_fit(Resources(1500, 3072, 40), ["us"])
    assert not ledger.could_ever_fit(Resources(3000, 1024, 40), ["eu", "us", "ap"])


def test_node_loss_orphans_its_reservations_until_released_once():
    ledger = cluster()
    assert ledger.reserve("a", BOT, ["ap"]) is None  # too little memory there
    node = ledger.reserve("a", BOT, ["eu"])
    ledger.reserve("b", BOT, ["us"])
    assert node is not None and node.node_id == "eu-1"
    added, removed = ledger.sync([n for n in ledger.nodes.values() if n.node_id != "eu-1"])
    assert (added, removed) == ([], ["eu-1"])
    assert ledger.check() and ledger.holds("a") and len(ledger) == 2
    assert ledger.capacity.cpu_millis == 3000 and ledger.snapshot()["orphaned"] == 1
    assert ledger.release("a") is True and ledger.release("a") is False
    assert not ledger.holds("a") and len(ledger) == 1 and ledger.check()


def test_choose_start_prefers_near_warm_then_near_cold_then_further():
    prefs = ["eu", "us"]
    assert choose_start(prefs, {"us": 1}, {"eu": 1, "us": 1}) == Start("cold", "eu")
    assert choose_start(prefs, {"eu": 1}, {}) == Start("warm", "eu")
    assert choose_start(prefs, {"us": 1}, {"eu": 0}) == Start("warm", "us")
    assert choose_start(prefs, {"ap": 3}, {"ap": 3}) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["eu", "us", "ap", None]),
                          st.integers(0, 30)), max_size=60))
def test_invariant_holds_under_any_sequence(steps):
    ledger = cluster()
    live: list[str] = []
    for index, (reserve, region, pick) in enumerate(steps):
        if reserve:
            regions = None if region is None else ledger.preference(region)
            if ledger.reserve(f"k{index}", BOT, regions) is not None:
                live.append(f"k{index}")
        elif live:
            assert ledger.release(live.pop(pick % len(live)))
        assert ledger.check()
        assert ledger.reserved + ledger.free == ledger.capacity
    for key in live:
        assert ledger.release(key)
    assert ledger.free == ledger.capacity and len(ledger) == 0
