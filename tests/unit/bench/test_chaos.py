"""bench chaos's pure core: the seeded fault schedule, how a caller's outcome is judged, the final
checks over records, webhook events and capacity, and the report. No I/O."""

from __future__ import annotations

import pytest

from voxfleet.bench.chaos_core import (
    BOT_KINDS, KINDS, RESTART, START_KINDS, Call, Fault, Hook, batches, check_webhooks, fault_schedule, final_checks,
    judge_phone, judge_websocket, summarize,
)

LOST = "We're sorry, the call could not continue."


def test_the_schedule_is_the_seeds():
    assert fault_schedule(40, 7) == fault_schedule(40, 7)
    assert fault_schedule(40, 7) != fault_schedule(40, 8)


@pytest.mark.parametrize("seed", range(20))
def test_every_kind_comes_up_in_each_round_of_draws(seed):
    faults = fault_schedule(30, seed, restart_every=10)
    assert [f.index for f in faults] == list(range(30))
    assert [f.index for f in faults if f.kind == RESTART] == [5, 15, 25]
    drawn = [f.kind for f in faults if f.kind != RESTART]
    for start in range(0, len(drawn) - len(KINDS) + 1, len(KINDS)):
        assert sorted(drawn[start:start + len(KINDS)]) == sorted(KINDS)
    assert {f.transport for f in faults if f.kind != RESTART} <= {"twilio", "websocket"}


def test_faults_land_within_their_windows():
    for fault in fault_schedule(200, 3):
        if fault.kind in BOT_KINDS:
            assert 0.5 <= fault.delay_s <= 2.0
        elif fault.kind == "template_sigkill":
            assert 0.0 <= fault.delay_s <= 0.05
        elif fault.kind == RESTART:
            assert 0.0 <= fault.delay_s <= 0.3
        else:
            assert fault.delay_s == 0.0


def test_restarts_come_every_fifth_of_the_run_by_default():
    assert sum(f.kind == RESTART for f in fault_schedule(60, 1)) == 5
    assert sum(f.kind == RESTART for f in fault_schedule(10, 1)) == 2  # at least every 5th


def test_batches_keep_restarts_alone_and_one_template_fault_each():
    faults = fault_schedule(60, 11)
    groups = batches(faults, 3)
    assert [f for group in groups for f in group] == faults  # all of them, in order
    for group in groups:
        assert 1 <= len(group) <= 3
        if any(f.kind == RESTART for f in group):
            assert len(group) == 1
        assert sum(f.kind in START_KINDS for f in group) <= 1


def test_two_template_faults_are_never_side_by_side():
    faults = [Fault(0, "template_sigkill", "twilio", 0.0), Fault(1, "template_sigstop", "twilio", 0.0),
              Fault(2, "bot_sigkill", "twilio", 1.0)]
    assert [[f.index for f in g] for g in batches(faults, 3)] == [[0], [1, 2]]


def test_a_call_faulted_mid_call_is_answered_only_when_told():
    told = Call(0, "bot_sigkill", "twilio", "s1", "told", fault_at=100.0, answered_at=100.25)
    assert told.answered and told.told_ms == 250.0
    hung_up = Call(0, "bot_sigkill", "twilio", "s1", "served", fault_at=100.0, answered_at=115.0)
    assert not hung_up.answered and hung_up.told_ms is None  # it heard silence until it gave up
    served = Call(1, "template_sigkill", "websocket", "s2", "served")
    assert served.answered  # a start fault ridden out
    assert Call(2, RESTART, "twilio", "s3", "cut").answered  # its relay died with the control plane
    assert not Call(2, RESTART, "webrtc", "s4", "served", kept_talking=False).answered
    assert Call(2, RESTART, "webrtc", "s4", "served", kept_talking=True).answered
    assert not Call(3, "template_sigstop", "twilio", "s5", "silent").answered
    assert Call(4, "bot_sigkill", "twilio", None, "refused").answered  # never reached its bot: no fault


def test_phone_outcomes():
    told = judge_phone(close_code=1011, stopped_by_caller=False, says=[LOST], hangup=True, after_error=None,
                       lost_message=LOST, heard_audio=True)
    assert told == ("told", "stream closed 1011; told the lost message")
    assert judge_phone(close_code=1000, stopped_by_caller=True, says=None, hangup=False, after_error=None,
                       lost_message=LOST, heard_audio=True)[0] == "served"
    assert judge_phone(close_code=1000, stopped_by_caller=True, says=None, hangup=False, after_error=None,
                       lost_message=LOST, heard_audio=False)[0] == "silent"
    cut = judge_phone(close_code=1006, stopped_by_caller=False, says=None, hangup=False,
                      after_error="ConnectError: refused", lost_message=LOST, heard_audio=True)
    assert cut[0] == "cut" and "unreachable" in cut[1]
    assert judge_phone(close_code=1000, stopped_by_caller=False, says=[], hangup=True, after_error=None,
                       lost_message=LOST, heard_audio=True)[0] == "cut"
    assert judge_phone(close_code=1011, stopped_by_caller=False, says=[], hangup=False, after_error=None,
                       lost_message=LOST, heard_audio=True)[0] == "silent"


def test_websocket_outcomes():
    fatal = [{"label": "rtvi-ai", "type": "error", "data": {"error": "the bot failed (crashed)", "fatal": True}}]
    assert judge_websocket(close_code=1011, close_reason="x", rtvi=fatal, heard_audio=True,
                           closed_by_caller=False)[0] == "told"
    assert judge_websocket(close_code=1011, close_reason="x", rtvi=[], heard_audio=True,
                           closed_by_caller=False) == ("told", "no RTVI error, close 1011 'x'")
    assert judge_websocket(close_code=1000, close_reason="", rtvi=[], heard_audio=True,
                           closed_by_caller=True)[0] == "served"
    assert judge_websocket(close_code=1006, close_reason="", rtvi=[], heard_audio=True,
                           closed_by_caller=False)[0] == "cut"


def record(sid: str, reason: str = "hangup", answered: bool = True, state: str = "ended") -> dict:
    return {"sessionId": sid, "state": state, "endReason": reason if state == "ended" else None,
            "timingsMs": {"answered": 12.0} if answered else {}}


def hook(event_id: str, kind: str, sid: str, reason: str | None = None, ok: bool = True) -> Hook:
    return Hook(event_id, kind, sid, reason, ok)


def test_webhooks_all_there():
    records = [record("a"), record("b", "crashed"), record("c", "start_failed", answered=False)]
    hooks = [hook("1", "session.started", "a"), hook("2", "session.ended", "a", "hangup"),
             hook("3", "session.started", "b"), hook("4", "session.failed", "b", "crashed"),
             hook("4", "session.failed", "b", "crashed"),  # redelivered: same webhook-id
             hook("5", "session.failed", "c", "start_failed")]
    checked = check_webhooks(records, hooks)
    assert checked == {"expected": 5, "received": 5, "redelivered": 1, "lost": [], "duplicate": [],
                       "wrong_kind": [], "bad_signature": 0, "unknown_session": []}


def test_webhooks_lost_duplicated_or_of_the_wrong_kind():
    records = [record("a"), record("b", "control_restart"), record("c")]
    hooks = [hook("1", "session.started", "a"), hook("2", "session.started", "a"),  # two events, two ids
             hook("3", "session.ended", "a"), hook("4", "session.started", "b"),
             hook("5", "session.ended", "b", "control_restart"), hook("6", "session.ended", "z", ok=False)]
    checked = check_webhooks(records, hooks)
    assert checked["lost"] == ["c: session.started", "c: session.ended"]
    assert checked["duplicate"] == ["a: 2x session.started"]
    assert checked["wrong_kind"] == ["b: session.ended for endReason control_restart"]
    assert checked["bad_signature"] == 1 and checked["unknown_session"] == ["z"]


CAPACITY = {"invariant_ok": True, "reservations": 2,
            "agents": {"chaos": {"warm": 2, "warming": 0, "active": 0}, "chaos-cold": {"warm": 0, "warming": 0,
                                                                                     "active": 0}}}


def test_a_clean_run_has_no_problems():
    calls = [Call(0, "bot_sigkill", "twilio", "a", "told", 1.0, 1.2)]
    hooks = [hook("1", "session.started", "a"), hook("2", "session.failed", "a", "crashed")]
    checks = final_checks(calls, [record("a", "crashed")], hooks, CAPACITY, live_bots=2, server_errors=0)
    assert checks["problems"] == [] and checks["leaked_reservations"] == 0 and checks["warm_bots"] == 2


def test_every_breach_is_named():
    calls = [Call(0, "bot_sigstop", "twilio", "a", "served", fault_at=1.0,
                  detail="the caller hung up (audio heard)")]
    capacity = {**CAPACITY, "invariant_ok": False, "reservations": 3}
    records = [record("a", "crashed"), record("b", state="active"), {**record("c"), "endReason": None},
               {"sessionId": "d", "state": "missing"}]
    checks = final_checks(calls, records, [], capacity, live_bots=2, server_errors=1, processes=5, templates=2)
    assert checks["leaked_reservations"] == 1 and checks["stray_processes"] == 1
    assert checks["not_ended"] == ["b"] and checks["no_reason"] == ["c"] and checks["missing"] == ["d"]
    problems = checks["problems"]
    assert problems[:7] == [
        "the capacity ledger's invariant does not hold",
        "reservations 3 != live bots 2 (warm 2, active 0)",
        "1 bot process(es) alive that the runtime does not count",
        "session b never ended",
        "session d is unknown to the server (404), though a start answered it",
        "session c ended with no reason",
        "caller not answered: bot_sigstop twilio a: served (the caller hung up (audio heard))",
    ]
    assert "webhook event lost: a: session.failed" in problems
    assert problems[-1] == "1 server 5xx answers (503 not-ready excepted)"


def test_the_report_per_kind():
    faults = [Fault(0, "bot_sigkill", "twilio", 1.0), Fault(1, "bot_sigkill", "websocket", 1.0),
              Fault(2, RESTART, "mixed", 0.0)]
    calls = [Call(0, "bot_sigkill", "twilio", "a", "told", 10.0, 10.1),
             Call(1, "bot_sigkill", "websocket", "b", "told", 10.0, 10.3),
             Call(2, RESTART, "webrtc", "c", "served", 20.0, None, kept_talking=True),
             Call(2, RESTART, "twilio", "d", "cut", 20.0, 20.05)]
    hooks = [h for sid, reason in (("a", "crashed"), ("b", "crashed"), ("c", "hangup"), ("d", "control_restart"))
             for h in (hook(f"s{sid}", "session.started", sid),
                       hook(f"e{sid}", "session.failed" if reason != "hangup" else "session.ended", sid, reason))]
    records = [record("a", "crashed"), record("b", "crashed"), record("c"), record("d", "control_restart")]
    checks = final_checks(calls, records, hooks, CAPACITY, live_bots=2, server_errors=0)
    report = summarize(faults, calls, checks, seed=5, seconds=12.3, restart_downtime_s=[8.0],
                       not_ready={"chaos-cold": 1, "chaos": 2})
    kill = report["by_kind"]["bot_sigkill"]
    assert kill["injected"] == 2 and kill["sessions"] == 2 and kill["told"] == 2
    assert kill["told_ms"]["p50"] == pytest.approx(200.0) and kill["told_ms"]["p99"] == pytest.approx(298.0)
    assert report["by_kind"][RESTART]["outcomes"] == {"served": 1, "cut": 1}
    assert report["by_kind"]["bot_raise"] == {"injected": 0, "sessions": 0, "outcomes": {}, "told": 0,
                                              "told_ms": {"p50": None, "p99": None}}
    assert (report["kept_talking_after_restart"], report["calls_live_through_restart"]) == (1, 1)
    assert report["relayed_calls_cut_by_restart"] == 1 and report["problems"] == []
    text = report["text"]
    assert "bot SIGKILL mid-call                      2        2     2    200 ms    298 ms  told 2" in text
    assert "calls kept talking after a restart: 1/1 (1 restarts, down 8.0 s p50)" in text
    assert "leaked reservations: 0" in text and text.endswith("problems: none")
    assert "starts refused as not ready (503 / phone held), by agent: chaos 2, chaos-cold 1" in text
