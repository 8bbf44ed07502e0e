"""The control plane's side of recordings: finishing each recorded session's WAV once the session
ended, telling (session record, ``recording.ready`` webhook), and the retention sweep.

The bot process writes the session's PCM (``runtime/recording_observer.py``); whatever ended the
session (a hang-up, a crash, ``kill -9`` of the bot), the session's end reaches
:meth:`RecordingFinisher.session_ended` through the service's change hook, and the file work
(``storage/recordings.py``) runs in a thread: it never blocks the event loop, and its failure is
logged, never the session's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxfleet.control.recorder import SessionRecorder
from voxfleet.scheduler.sessions import ENDED, SessionRecord
from voxfleet.storage import recordings
from voxfleet.storage.store import Store

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0

Lookup = Callable[[str], SessionRecord | None]
ReadySender = Callable[[str, str, dict[str, Any]], None]  # (session id, agent, recording)


class RecordingFinisher:
    def __init__(self, directory: Path, recorded_agents: set[str], *, retention_days: float,
                 recorder: SessionRecorder, store: Store, lookup: Lookup, send_ready: ReadySender) -> None:
        self.directory = directory
        self.recorded_agents = recorded_agents
        self.retention_days = retention_days
        self.recorder = recorder
        self.store = store
        self.lookup = lookup
        self.send_ready = send_ready
        self.tasks: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.finishing: set[str] = set()  # sessions whose WAV is being made (each once)

    def start(self) -> None:
        if self.recorded_agents or self.directory.is_dir():
            self.sweeper = asyncio.create_task(self._sweep_hourly(), name="recording-sweep")

    def session_ended(self, record: SessionRecord) -> None:
        """The service's change hook: a recorded session that ended gets its WAV finished."""
        if (record.state == ENDED and record.agent in self.recorded_agents and record.recording is None
                and record.session_id not in self.finishing):
            self.finishing.add(record.session_id)
            self._spawn(self._finish(record.session_id, record.agent), f"recording:{record.session_id}")

    def finish_left_over(self, live: set[str]) -> None:
        """Finish the PCM files of sessions that ended while no control plane was there to (those
        in `live` are still being recorded)."""
        async def finish_all() -> None:
            for session_id in await asyncio.to_thread(recordings.unfinished, self.directory):
                if session_id not in live and self.lookup(session_id) is None:
                    stored = await self.store.get_session(session_id)
                    if stored is not None and stored["state"] == ENDED:
                        await self._finish(session_id, stored["agent"])

        self._spawn(finish_all(), "recording:left-over")

    async def _finish(self, session_id: str, agent: str) -> None:
        self.finishing.add(session_id)
        try:
            await self._finish_once(session_id, agent)
        finally:
            self.finishing.discard(session_id)

    async def _finish_once(self, session_id: str, agent: str) -> None:
        try:
            recording = await asyncio.to_thread(recordings.finalize, self.directory, session_id)
        except Exception:  # noqa: BLE001 - a recording's failure is logged, never the session's
            log.exception("session %s: the recording could not be finished", session_id)
            return
        if recording is None:
            log.info("session %s: nothing was recorded (the bot never had audio)", session_id)
            await self._update(session_id, {"state": "empty"}, "recording_empty")
            return
        recording["readyAt"] = time.time()
        await self._update(session_id, recording, "recording_ready")
        log.info("session %s: recording ready (%.1f s, %d bytes)", session_id, recording["durationS"],
                 recording["bytes"])
        self.send_ready(session_id, agent, recording)

    async def _update(self, session_id: str, recording: dict[str, Any], event: str) -> None:
        """The session's record (in memory and stored) tells of its recording."""
        record = self.lookup(session_id)
        if record is not None:  # stored in order with its other writes
            record.recording = recording
            self.recorder.save(record, event, recording)
            return
        try:
            await self.store.set_recording(session_id, recording)
            await self.store.add_event(session_id, event, recording)
        except Exception as exc:  # noqa: BLE001 - the file is fine; its record is told next sweep
            log.warning("session %s: recording state not stored: %s", session_id, exc)

    async def sweep(self, now: float | None = None) -> list[str]:
        """Delete the recordings past retention; their sessions' records say so."""
        expired = await asyncio.to_thread(recordings.sweep, self.directory, self.retention_days, now)
        for session_id in expired:
            stored = self.lookup(session_id)
            previous = (stored.recording if stored is not None
                        else ((await self.store.get_session(session_id)) or {}).get("recording")) or {}
            await self._update(session_id, {**previous, "state": "expired", "expiredAt": time.time()},
                               "recording_expired")
        if expired:
            log.info("recordings: %d past retention (%g days) deleted", len(expired), self.retention_days)
        return expired

    async def _sweep_hourly(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("recordings: retention sweep failed")
            await asyncio.sleep(SWEEP_EVERY_S)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        """Let recordings being finished finish (they are short), stop the sweep."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=10)
        if self.sweeper is not None:
            self.sweeper.cancel()
            try:
                await self.sweeper
            except asyncio.CancelledError:
                pass
