"""The session state machine and table (scheduler/sessions.py)."""

from __future__ import annotations

from voxfleet.scheduler.sessions import ACTIVE, ENDED, STARTING, SessionRecord, SessionTable


def test_session_ends_once_and_first_reason_wins():
    record = SessionRecord(session_id="s", agent="a", transport="webrtc")
    assert record.state == STARTING
    assert record.activate() and record.state == ACTIVE
    assert not record.activate()
    assert record.end("crashed", "killed by SIGKILL", exit_signal=9)
    assert not record.end("hangup")
    assert (record.state, record.end_reason, record.exit_signal) == (ENDED, "crashed", 9)
    assert "ended" in record.timings_ms
    public = record.to_public()
    assert public["endReason"] == "crashed" and public["endDetail"] == "killed by SIGKILL"


def test_session_table_keeps_a_bounded_history():
    table = SessionTable(keep_ended=2)
    records = [SessionRecord(session_id=str(i), agent="a", transport="webrtc") for i in range(4)]
    for record in records:
        table.add(record)
    assert table.count() == 4
    for record in records:
        record.end("hangup")
        table.retire(record)
    assert table.count() == 0
    assert table.get("0") is None and table.get("3") is records[3]
