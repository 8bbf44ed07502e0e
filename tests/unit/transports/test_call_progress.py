"""An outbound call's progress from its carrier's status reports (pure)."""

from __future__ import annotations

import pytest

from voxfleet.end_reasons import EndReason
from voxfleet.transports.call_progress import (
    PLIVO_STATUS, STATUSES, TELNYX_STATUS, TWILIO_STATUS, CallEnded, CallProgress,
)


def test_an_answered_call_moves_forward_and_ends_no_session_by_itself():
    call = CallProgress()
    for at, status in enumerate(("queued", "initiated", "ringing", "answered", "completed")):
        assert call.report(status, float(at)) is None
    assert call.status == "completed" and call.answered_at == 3.0
    assert [e["status"] for e in call.timeline] == ["queued", "initiated", "ringing", "answered", "completed"]


@pytest.mark.parametrize(("status", "reason"), [
    ("busy", EndReason.CALLEE_BUSY), ("no-answer", EndReason.NO_ANSWER), ("failed", EndReason.DIAL_FAILED),
    ("canceled", EndReason.CANCELED)])
def test_a_call_never_answered_ends_its_session_once_with_its_reason(status, reason):
    call = CallProgress()
    call.report("ringing", 1.0)
    ended = call.report(status, 2.0, "SIP 486")
    assert ended == CallEnded(reason, "SIP 486")
    assert call.report(status, 2.5) is None and call.report("completed", 3.0) is None  # retried, then later
    assert call.status == status and [e["status"] for e in call.timeline] == ["ringing", status, "completed"]


def test_late_and_repeated_reports_are_kept_once_and_never_move_the_status_back():
    call = CallProgress()
    call.report("answered", 2.0)
    assert call.report("ringing", 1.5) is None and call.status == "answered"  # arrived after the answer
    call.report("ringing", 1.6)
    assert [e["status"] for e in call.timeline] == ["answered", "ringing"]
    assert call.report("busy", 3.0) is None  # a final report after an answer ends nothing here: the stream does
    assert call.to_public()["answeredAt"] == 2.0


def test_every_twilio_status_has_a_place_and_unknown_ones_are_named():
    call = CallProgress()
    for status in TWILIO_STATUS.values():
        call.report(status, 1.0)
    with pytest.raises(ValueError, match="unknown call status 'in-progress'"):
        call.report("in-progress", 1.0)


def test_telnyx_statuses_map_to_ours_and_an_unanswered_texml_call_ends_with_its_reason():
    # Telnyx's TeXML CallStatus values (status callbacks and the initiate response's "queued")
    assert set(TELNYX_STATUS) == {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer",
                                  "failed", "canceled"}
    assert set(TELNYX_STATUS.values()) <= set(STATUSES) and TELNYX_STATUS["in-progress"] == "answered"
    answered = CallProgress()
    for at, status in enumerate(("queued", "initiated", "ringing", "in-progress", "completed")):
        assert answered.report(TELNYX_STATUS[status], float(at)) is None
    assert answered.status == "completed" and answered.answered_at == 3.0
    for status, reason in (("busy", EndReason.CALLEE_BUSY), ("no-answer", EndReason.NO_ANSWER),
                           ("failed", EndReason.DIAL_FAILED), ("canceled", EndReason.CANCELED)):
        call = CallProgress()
        call.report(TELNYX_STATUS["ringing"], 1.0)
        ended = call.report(TELNYX_STATUS[status], 2.0)
        assert ended is not None and ended.reason == reason


def test_plivo_statuses_map_to_ours_and_a_plivo_call_never_answered_ends_with_its_reason():
    assert set(PLIVO_STATUS.values()) <= set(STATUSES)
    assert PLIVO_STATUS["in-progress"] == "answered" and PLIVO_STATUS["cancel"] == "canceled"
    for plivo, reason in (("busy", EndReason.CALLEE_BUSY), ("no-answer", EndReason.NO_ANSWER),
                          ("timeout", EndReason.DIAL_FAILED), ("failed", EndReason.DIAL_FAILED),
                          ("cancel", EndReason.CANCELED)):
        call = CallProgress()
        call.report("queued", 0.0)
        call.report(PLIVO_STATUS["ringing"], 1.0)
        ended = call.report(PLIVO_STATUS[plivo], 2.0, "HangupCause X")
        assert ended == CallEnded(reason, "HangupCause X"), plivo
    answered = CallProgress()
    for at, plivo in enumerate(("ringing", "in-progress", "completed")):
        assert answered.report(PLIVO_STATUS[plivo], float(at)) is None  # an answered call's end is its stream's
    assert answered.status == "completed" and answered.answered_at == 1.0
