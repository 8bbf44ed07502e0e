"""The chaos suite: ``voxfleet bench chaos`` for real, small and seeded. A real ``voxfleet serve``
with the faulty tone agents; bots killed (-9, SIGSEGV), stopped and made to raise mid-call,
templates killed and stopped during starts, the control plane killed with -9 and started again
with calls live. After it: the ledger holds, nothing leaked, every session ended with a reason,
every caller answered, every webhook delivered once. About a minute on 2 cores."""

from __future__ import annotations

import pytest

from voxfleet.bench.chaos import run_chaos_bench
from voxfleet.bench.chaos_core import BOT_KINDS, KINDS, RESTART
from voxfleet.end_reasons import FAILED_REASONS

pytestmark = pytest.mark.e2e

# With one restart in 10 faults: every kind, phone calls and WebSocket clients, and the kill 0.23 s
# after a cold start was asked for (seed 1's 1 ms often beats the session's first write to the store)
SEED = 4
FAULTS = 10


async def test_every_fault_ends_in_an_answer_and_nothing_leaks_or_is_lost():
    report = await run_chaos_bench(FAULTS, SEED, restart_every=FAULTS)
    by_kind, checks = report["by_kind"], report["checks"]
    log = "\n".join(report["text"].splitlines() + [f"server logs: {report['server_logs']}"])
    assert all(by_kind[kind]["injected"] >= 1 for kind in (*KINDS, RESTART)), log
    assert {c["transport"] for c in report["call_log"]} == {"twilio", "websocket", "webrtc"}, log

    assert checks["invariant_ok"], log
    assert report["leaked_reservations"] == 0, log
    assert checks["reservations"] == checks["live_bots"] == checks["warm_bots"] and checks["active"] == 0, log
    assert not checks["not_ended"] and not checks["no_reason"], log
    assert not checks["unanswered"], log
    assert report["lost_webhook_events"] == 0 and not checks["webhooks"]["duplicate"], log
    assert not checks["webhooks"]["wrong_kind"] and not checks["webhooks"]["bad_signature"], log
    assert report["kept_talking_after_restart"] == report["calls_live_through_restart"] >= 1, log
    assert checks["server_5xx"] == 0, log
    # A failed session may be recorded with another failure than its fault's (a bot that raised
    # seen as crashed: its report lost in a race on the control link); its caller is told all
    # the same and session.failed sent. Any other problem fails the run.
    wrong = report["wrong_end_reasons"]
    assert all(w["endReason"] in FAILED_REASONS for w in wrong if w["kind"] in BOT_KINDS), log
    wrong_text = {f"session {w['session']} ended {w['endReason']}" for w in wrong if w["kind"] in BOT_KINDS}
    assert [p for p in report["problems"] if not any(t in p for t in wrong_text)] == [], log

    for kind in BOT_KINDS:  # every caller whose bot was faulted mid-call was told, and soon
        assert by_kind[kind]["told"] == by_kind[kind]["sessions"], log
    told_ms = [c["told_ms"] for c in report["call_log"] if c["outcome"] == "told"]
    assert told_ms and max(told_ms) < 8000, log  # a bound on silence (SIGSTOP: ~3 s to be judged dead)
