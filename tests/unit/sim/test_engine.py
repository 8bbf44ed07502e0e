"""The simulator's event engine (sim/engine.py): a hand-computed run, determinism, invariants (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxfleet.sim.engine import PoolState, simulate
from voxfleet.sim.policies import POLICY_NAMES, PolicySettings, build_policy
from voxfleet.sim.report import compare
from voxfleet.sim.traces import TRACE_KINDS, Trace, build_trace


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
