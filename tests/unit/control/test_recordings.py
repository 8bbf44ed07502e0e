"""The recording finisher (control/recordings.py) over a real SQLite store and recorder: a recorded
session's end makes its WAV, tells its record and queues recording.ready once; the retention
sweep deletes an expired file and marks it expired."""

import os
import time

from voxfleet.control.recorder import SessionRecorder
from voxfleet.control.recordings import RecordingFinisher
from voxfleet.end_reasons import EndReason
from voxfleet.scheduler.sessions import SessionRecord, SessionTable
from voxfleet.storage import recordings
from voxfleet.storage.store import Store


async def test_an_ended_session_gets_its_wav_record_and_webhook_then_expires(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/voxfleet.db")
    await store.migrate()
    recorder = SessionRecorder(store)
    recorder.start()
    table = SessionTable(10)
    sent = []
    directory = tmp_path / "recordings"
    directory.mkdir()
    finisher = RecordingFinisher(directory, {"rec"}, retention_days=30, recorder=recorder, store=store,
                                 lookup=table.get, send_ready=lambda *args: sent.append(args))
    try:
        records = {agent: SessionRecord(session_id=f"s-{agent}", agent=agent, transport="webrtc")
                   for agent in ("rec", "plain", "silent")}
        finisher.recorded_agents.add("silent")
        recordings.part_path(directory, "s-rec").write_bytes(bytes(16000 * 4))  # 1 s of stereo silence
        for record in records.values():
            table.add(record)
            recorder.record(record)
            record.end(EndReason.HANGUP)
            table.retire(record)
            recorder.record(record)
            finisher.session_ended(record)
            finisher.session_ended(record)  # a second change after the end: finished once
        await finisher.aclose()
        await recorder.aclose()

        stored = await store.get_session("s-rec")
        assert stored["recording"]["state"] == "ready" and stored["recording"]["durationS"] == 1.0
        assert stored["recording"]["channels"] == ["caller", "bot"]
        assert [e["kind"] for e in stored["events"]].count("recording_ready") == 1
        assert records["rec"].to_public()["recording"] == stored["recording"]
        assert [(s, a) for s, a, _ in sent] == [("s-rec", "rec")]
        assert (await store.get_session("s-plain"))["recording"] is None  # its agent does not record
        assert (await store.get_session("s-silent"))["recording"] == {"state": "empty"}

        # past retention: the file goes, the record (in memory and stored) says expired
        os.utime(recordings.wav_path(directory, "s-rec"), (time.time() - 31 * 86400,) * 2)
        recorder = finisher.recorder = SessionRecorder(store)
        recorder.start()
        assert await finisher.sweep() == ["s-rec"]
        await recorder.aclose()
        assert not recordings.wav_path(directory, "s-rec").exists()
        assert records["rec"].recording["state"] == "expired"
        assert (await store.get_session("s-rec"))["recording"]["state"] == "expired"
    finally:
        await store.close()
