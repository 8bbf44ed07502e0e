"""The sans-I/O admission core: decisions checked one by one, then random event sequences.

No processes, no asyncio: a small "world" below plays the part of the backend, carrying out
each command the core returns the way the service's driver does (a launch later succeeds or
fails, a stop later ends the bot, a bot may die at any time).
"""

from __future__ import annotations

from collections import Counter
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxfleet.exceptions import AgentNotFound, NotReady, Unplaceable
from voxfleet.scheduler.admission import (
    AgentPool, Admission, Assign, Command, Dequeue, Enqueue, Expire, Launch, Reject, Stop, refill_backoff,
)
from voxfleet.scheduler.capacity import Profile, Resources
from voxfleet.scheduler.placement import ClusterLedger, Node
from voxfleet.scheduler.pool import PercentagePool, WarmPoolPolicy

SLOT = Resources(1000, 100, 10)


def node(node_id: str, region: str, slots: int) -> Node:
    return Node(node_id, region, node_id, SLOT.times(slots))


def make_core(*, slots: int = 2, min_warm: int = 1, queue_max: int = 2, regions: tuple[str, ...] = ("eu",),
              agents: tuple[tuple[str, int, int], ...] = (("a", 1, 10),)) -> Admission:
    """``agents``: (name, slots per bot, max_bots)."""
    ids = count(1)
    ledger = ClusterLedger([node(f"n-{r}", r, slots) for r in regions])
    pools = [AgentPool(name, Profile(name, SLOT.times(size)), PercentagePool(WarmPoolPolicy(min_warm=min_warm)),
                       max_bots=max_bots) for name, size, max_bots in agents]
    return Admission(pools, ledger, queue_max=queue_max, queue_wait_s=30.0, new_id=lambda: f"bot{next(ids)}")


def only(commands: list[Command], kind: type) -> list:
    return [c for c in commands if isinstance(c, kind)]


# -- decisions -------------------------------------------------------------------------------

def test_a_warm_bot_is_taken_first_and_refilled():
    core = make_core()
    [warm] = only(core.tick(0.0), Launch)
    assert warm.session_id is None and core.ledger.holds(warm.bot_id)
    core.bot_ready(warm.bot_id, 1.0, warmup_s=0.5)
    commands = core.start_requested("s1", "a", {"x": 1}, None, 2.0)
    assert commands[0] == Assign(warm.bot_id, "s1", {"x": 1})
    [refill] = only(commands, Launch)
    assert refill.session_id is None  # the replacement starts at once
    assert core.pools["a"].refill_s == pytest.approx(0.7 * 1.0 + 0.3 * 0.5)


def test_no_warm_bot_means_a_cold_start_then_the_queue_then_reject():
    core = make_core(slots=1, min_warm=0, queue_max=1)
    [cold] = core.start_requested("s1", "a", "body", None, 0.0)
    assert isinstance(cold, Launch) and (cold.session_id, cold.body) == ("s1", "body")
    assert core.start_requested("s2", "a", None, None, 0.0) == [Enqueue("s2", 1)]
    [reject] = core.start_requested("s3", "a", None, None, 0.0)
    assert isinstance(reject, Reject) and reject.error.retry_after_s == 15
    # s1's bot ends: s2 leaves the queue and cold-starts in the freed slot
    commands = core.bot_exited(cold.bot_id, 5.0)
    assert commands[0] == Dequeue("s2")
    assert isinstance(commands[1], Launch) and commands[1].session_id == "s2"
    assert set(core.sessions) == {"s2"} and not core.ledger.holds(cold.bot_id)


def test_a_session_that_may_not_queue_is_rejected_when_it_cannot_start_now():
    core = make_core(slots=1, min_warm=0, queue_max=5)
    [cold] = core.start_requested("s1", "a", None, None, 0.0, queue=False)
    assert isinstance(cold, Launch)  # room: admitted like any session
    [reject] = core.start_requested("s2", "a", None, None, 0.0, queue=False)
    assert isinstance(reject, Reject) and "nothing was started" in str(reject.error)
    assert set(core.sessions) == {"s1"} and core.queue_position("s2") is None
    assert core.ledger.holds(cold.bot_id) and len(core.bots) == 1  # the reservation is s1's only


def test_another_agents_idle_bot_is_retired_for_a_session_that_cannot_start():
    core = make_core(slots=1, agents=(("a", 1, 10), ("b", 1, 10)))
    [warm_a] = only(core.tick(0.0), Launch)
    assert warm_a.agent == "a"
    core.bot_ready(warm_a.bot_id, 1.0, 1.0)
    commands = core.start_requested("s1", "b", None, None, 2.0)
    assert commands == [Stop(warm_a.bot_id, "retired"), Enqueue("s1", 1)]
    commands = core.bot_exited(warm_a.bot_id, 3.0)
    assert commands[0] == Dequeue("s1") and commands[1].session_id == "s1"


def test_the_nearest_region_first_and_max_bots_bound_cold_starts():
    core = make_core(slots=1, min_warm=0, regions=("eu", "us"), agents=(("a", 1, 2),))
    [first] = core.start_requested("s1", "a", None, "us", 0.0)
    assert first.region == "us"
    [second] = core.start_requested("s2", "a", None, "us", 0.0)
    assert second.region == "eu"  # us is full: the next region
    assert core.start_requested("s3", "a", None, None, 0.0) == [Enqueue("s3", 1)]  # max_bots 2


def test_unknown_agents_and_impossible_profiles_are_refused_at_once():
    core = make_core(agents=(("a", 1, 10), ("huge", 5, 10)))
    with pytest.raises(AgentNotFound):
        core.start_requested("s1", "nobody", None, None, 0.0)
    with pytest.raises(Unplaceable):
        core.start_requested("s2", "huge", None, None, 0.0)
    with pytest.raises(Unplaceable):
        core.start_requested("s3", "a", None, "mars", 0.0)
    assert not core.sessions


def test_a_queued_session_expires_once_and_a_failed_launch_frees_its_slot():
    core = make_core(slots=1, min_warm=0)
    [cold] = core.start_requested("s1", "a", None, None, 0.0)
    core.start_requested("s2", "a", None, None, 0.0)
    [expired] = core.queue_timeout("s2", 30.0)
    assert isinstance(expired, Expire) and expired.reason == "queue_timeout"
    assert core.queue_timeout("s2", 31.0) == [] and core.leave_queue("s2", "hangup", "", 31.0) == []
    core.launch_failed(cold.bot_id, 32.0)
    assert len(core.ledger) == 0 and not core.sessions


def test_a_failed_assignment_stops_the_bot_and_ends_the_session():
    core = make_core(min_warm=1, slots=1)
    [warm] = only(core.tick(0.0), Launch)
    core.bot_ready(warm.bot_id, 1.0, 1.0)
    core.start_requested("s1", "a", None, None, 2.0)
    assert core.assign_failed("s1", 3.0) == [Stop(warm.bot_id, "start_failed")]
    assert not core.sessions and core.ledger.holds(warm.bot_id)  # held until the bot is gone
    [refill] = only(core.bot_exited(warm.bot_id, 4.0), Launch)
    assert refill.session_id is None


def test_drain_expires_the_queue_and_stops_idle_bots():
    core = make_core(slots=2, min_warm=1)
    [warm] = only(core.tick(0.0), Launch)
    core.bot_ready(warm.bot_id, 1.0, 1.0)
    [refill] = only(core.start_requested("s1", "a", None, None, 2.0), Launch)  # takes the warm bot
    core.bot_ready(refill.bot_id, 3.0, 1.0)
    core.start_requested("s2", "a", None, None, 4.0)  # takes the refill
    assert core.start_requested("s3", "a", None, None, 4.0) == [Enqueue("s3", 1)]  # both slots busy
    assert core.drain() == [Expire("s3", "shutdown", "voxfleet is shutting down", 15)]
    with pytest.raises(NotReady):
        core.start_requested("s4", "a", None, None, 5.0)
    assert core.bot_exited(warm.bot_id, 6.0) == []  # no refills while draining
    assert set(core.sessions) == {"s2"}


def test_one_client_holds_at_most_its_share_of_capacity_and_of_the_queue():
    ids = count(1)
    ledger = ClusterLedger([node("n", "eu", 4)])
    pool = AgentPool("a", Profile("a", SLOT), PercentagePool(WarmPoolPolicy(min_warm=0)), max_bots=10)
    core = Admission([pool], ledger, queue_max=4, queue_wait_s=30.0, client_share=0.5,
                     new_id=lambda: f"bot{next(ids)}")
    assert isinstance(core.start_requested("s1", "a", None, None, 0.0, client="flood")[0], Launch)
    assert isinstance(core.start_requested("s2", "a", None, None, 0.0, client="flood")[0], Launch)
    [reject] = core.start_requested("s3", "a", None, None, 0.0, client="flood")
    assert reject.error.code == "CLIENT_SHARE" and "2 session(s)" in str(reject.error)
    # another client still gets a bot, and fills capacity
    assert isinstance(core.start_requested("s4", "a", None, None, 0.0, client="caller")[0], Launch)
    assert isinstance(core.start_requested("s5", "a", None, None, 0.0, client="other")[0], Launch)
    assert core.start_requested("s6", "a", None, None, 0.0, client="other") == [Enqueue("s6", 1)]
    assert core.start_requested("s7", "a", None, None, 0.0, client="third") == [Enqueue("s7", 2)]
    assert core.start_requested("s8", "a", None, None, 0.0, client="third") == [Enqueue("s8", 3)]
    [reject] = core.start_requested("s9", "a", None, None, 0.0, client="third")  # 2 of 4 queued is its share
    assert reject.error.code == "CLIENT_SHARE" and "queue" in str(reject.error)
    with pytest.raises(ValueError):
        Admission([pool], ledger, queue_max=1, queue_wait_s=1.0, client_share=0.0)


def test_a_failed_warm_launch_holds_refills_for_a_backoff_that_doubles():
    core = make_core(slots=4, min_warm=1)
    [first] = only(core.tick(0.0), Launch)
    assert core.launch_failed(first.bot_id, 10.0) == []  # not again at once: the template may be down
    assert core.tick(10.4) == []
    [second] = only(core.tick(10.5), Launch)  # 0.5 s later, on the service's tick
    assert core.launch_failed(second.bot_id, 11.0) == []
    assert core.tick(11.9) == [] and len(only(core.tick(12.0), Launch)) == 1  # 1 s
    assert len(core.ledger) == 1  # each failed launch released its reservation
    assert [refill_backoff(n) for n in (1, 2, 3, 4, 7, 8, 100)] == [0.5, 1, 2, 4, 30, 30, 30]


def test_a_ready_bot_ends_the_backoff_and_the_snapshot_shows_it():
    core = make_core(slots=4, min_warm=1)
    for now in (0.0, 1.0, 3.0):
        [launch] = only(core.tick(now), Launch)
        core.launch_failed(launch.bot_id, now)
    pool = core.snapshot(3.5, lambda bot_id: None)["agents"]["a"]
    assert pool["launch_failures"] == 3 and pool["refill_retry_at"] == 5.0 and pool["warming"] == 0
    [launch] = only(core.tick(5.0), Launch)
    core.bot_ready(launch.bot_id, 6.0, warmup_s=1.0)
    pool = core.snapshot(6.0, lambda bot_id: None)["agents"]["a"]
    assert pool["launch_failures"] == 0 and pool["refill_retry_at"] is None
    # taking the warm bot refills at once again
    assert len(only(core.start_requested("s1", "a", None, None, 6.1), Launch)) == 1


def test_a_backoff_does_not_hold_back_cold_starts():
    core = make_core(slots=2, min_warm=1)
    [warm] = only(core.tick(0.0), Launch)
    core.launch_failed(warm.bot_id, 0.0)
    [cold] = core.start_requested("s1", "a", "body", None, 0.1)  # no warm bot: cold, and no refill yet
    assert isinstance(cold, Launch) and cold.session_id == "s1"
    core.launch_failed(cold.bot_id, 0.2)  # a failed cold start is the session's end, not a pool backoff
    assert core.pools["a"].launch_failures == 1 and not core.sessions
    assert len(only(core.tick(0.5), Launch)) == 1


# -- random event sequences ------------------------------------------------------------------

class World:
    """Carries out the core's commands like the driver and the backend would."""

    def __init__(self) -> None:
        ids = count(1)
        ledger = ClusterLedger([node("n1", "eu", 3), node("n2", "eu", 2), node("n3", "us", 3)],
                               nearest={"us": ["eu"]})
        self.released: Counter[str] = Counter()
        self.reserved: set[str] = set()
        reserve, release = ledger.reserve, ledger.release

        def counting_reserve(key, amount, regions=None):
            placed = reserve(key, amount, regions)
            if placed is not None:
                self.reserved.add(key)
            return placed

        def counting_release(key):
            done = release(key)
            if done:
                self.released[key] += 1
            return done

        ledger.reserve, ledger.release = counting_reserve, counting_release
        pools = [AgentPool("a", Profile("a", SLOT), PercentagePool(WarmPoolPolicy(min_warm=1, warm_pct=50)),
                           max_bots=5),
                 AgentPool("b", Profile("b", SLOT.times(2)), PercentagePool(WarmPoolPolicy(min_warm=1)),
                           max_bots=3)]
        self.core = Admission(pools, ledger, queue_max=3, queue_wait_s=30.0, new_id=lambda: f"bot{next(ids)}")
        self.now = 0.0
        self.launching: list[str] = []  # Launch commands not yet answered
        self.assigning: list[str] = []  # sessions whose Assign is in flight
        self.running: list[str] = []  # bots whose process is up
        self.stopping: list[str] = []  # bots asked to stop
        self.queued: list[str] = []
        self.answers: Counter[str] = Counter()  # session -> admissions + refusals (must be 1 each)
        self.sessions = 0

    def apply(self, commands: list[Command]) -> None:
        for c in commands:
            if isinstance(c, Launch):
                self.launching.append(c.bot_id)
                if c.session_id is not None:
                    self.answers[c.session_id] += 1
            elif isinstance(c, Assign):
                assert c.bot_id in self.running
                self.assigning.append(c.session_id)
                self.answers[c.session_id] += 1
            elif isinstance(c, Stop):
                assert c.bot_id in self.running or c.bot_id in self.launching
                self.stopping.append(c.bot_id)
            elif isinstance(c, Enqueue):
                self.queued.append(c.session_id)
            elif isinstance(c, Dequeue):
                self.queued.remove(c.session_id)
            elif isinstance(c, (Expire, Reject)):
                if c.session_id in self.queued:
                    self.queued.remove(c.session_id)
                self.answers[c.session_id] += 1

    def step(self, kind: str, pick: int, agent: str, region: str | None) -> None:
        self.now += 1.0
        core = self.core

        def take(items: list[str]) -> str | None:
            return items.pop(pick % len(items)) if items else None

        if kind == "start":
            self.sessions += 1
            session = f"s{self.sessions}"
            try:
                self.apply(core.start_requested(session, agent, None, region, self.now))
            except Unplaceable:
                self.answers[session] += 1
        elif kind in ("launch_ok", "launch_fail") and (bot := take(self.launching)):
            known = core.bots[bot]
            if kind == "launch_fail":
                self.apply(core.launch_failed(bot, self.now))
                if bot in self.stopping:
                    self.stopping.remove(bot)
            else:
                self.running.append(bot)
                if known.state == "warming":
                    self.apply(core.bot_ready(bot, self.now, 1.0))
        elif kind in ("assign_ok", "assign_fail") and (session := take(self.assigning)):
            if kind == "assign_fail":
                self.apply(core.assign_failed(session, self.now))
        elif kind in ("crash", "stop_done"):
            bot = take(self.running if kind == "crash" else [b for b in self.stopping if b in self.running])
            if bot:
                if bot in self.running:
                    self.running.remove(bot)
                if bot in self.stopping:
                    self.stopping.remove(bot)
                self.apply(core.bot_exited(bot, self.now))
        elif kind == "queue_timeout" and self.queued:
            self.apply(core.queue_timeout(self.queued[pick % len(self.queued)], self.now))
        elif kind == "node_change":
            nodes = [node("n1", "eu", 3), node("n3", "us", 3)]
            if "n2" not in core.ledger.nodes:
                nodes.append(node("n2", "eu", 2))
            self.apply(core.nodes_changed(nodes, self.now)[2])
        elif kind == "tick":
            self.apply(core.tick(self.now))
        self.check()

    def check(self) -> None:
        core = self.core
        assert core.ledger.check()
        assert all(n <= 1 for n in self.released.values()), "a reservation was released twice"
        assert all(n <= 1 for n in self.answers.values()), "a session was answered twice"
        for bot in core.bots.values():  # every bot the core knows holds its reservation
            assert core.ledger.holds(bot.bot_id)
        assert len(core.ledger) == len(core.bots)
        for pool in core.pools.values():
            assert pool.active >= 0 and pool.warming >= 0
            assert pool.active == sum(1 for s in core.sessions.values() if s.agent == pool.name and s.bot_id)
        for session_id in core.queue.waiting():  # nobody waits while a warm bot of its agent idles there
            session = core.sessions[session_id]
            assert not any(core.pools[session.agent].warm_in(r) for r in session.preference)

    def settle(self) -> None:
        """Drain, then let every launch, assignment and stop complete."""
        self.apply(self.core.drain())
        for _ in range(1000):
            if self.launching:
                self.step("launch_ok", 0, "a", None)
            elif self.assigning:
                self.step("assign_ok", 0, "a", None)
            elif self.running:
                self.step("crash", 0, "a", None)
            else:
                break


events = st.lists(
    st.tuples(st.sampled_from(["start"] * 4 + ["launch_ok"] * 4 + ["assign_ok"] * 2 + ["stop_done"] * 2
                              + ["launch_fail", "assign_fail", "crash", "queue_timeout", "node_change", "tick"]),
              st.integers(0, 7), st.sampled_from(["a", "b"]), st.sampled_from([None, "eu", "us"])),
    min_size=5, max_size=120)


@settings(max_examples=300, deadline=None)
@given(sequence=events)
def test_random_event_sequences_keep_the_ledger_and_answer_every_session_once(sequence):
    world = World()
    for kind, pick, agent, region in sequence:
        world.step(kind, pick, agent, region)
    world.settle()
    core = world.core
    assert not core.sessions and not core.bots and not core.queue
    assert len(core.ledger) == 0 and core.ledger.check()
    assert world.released == Counter({key: 1 for key in world.reserved}), "every reservation released once"
    assert set(world.answers) == {f"s{i}" for i in range(1, world.sessions + 1)}
    assert all(n == 1 for n in world.answers.values())


def test_a_session_behind_another_agents_blocked_head_takes_its_own_agents_warm_bot():
    # found by the random sequences above: the head (agent b, at its limit) waited for capacity
    # and the session behind it (agent a) waited too, beside an idle warm bot of agent a
    world = World()
    for step in [("start", 3, "b", "us"), ("start", 2, "b", "eu"), ("start", 1, "b", "eu"), ("start", 4, "b", "eu"),
                 ("start", 3, "a", "eu"), ("start", 5, "a", "eu"), ("launch_ok", 1, "b", None)]:
        world.step(*step)  # checks the invariants after each step
    assert [world.core.sessions[s].agent for s in world.core.queue.waiting()] == ["b"]
