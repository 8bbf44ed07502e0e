"""Writes session records, and an event for each change of state, to the store in the background,
in order, never blocking a call; a write the store refuses (it is down, restarting, locked) is
retried with backoff until it is stored."""

from __future__ import annotations

import asyncio
import logging

from voxfleet.scheduler.sessions import SessionRecord
from voxfleet.storage.store import Store

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0


class SessionRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.last_state: dict[str, str] = {}

    def start(self) -> None:
        self.task = asyncio.create_task(self._write(), name="session-recorder")

    def record(self, record: SessionRecord) -> None:
        """The service's on_change hook: snapshot now, write soon."""
        snapshot = record.to_public()
        changed = self.last_state.get(record.session_id) != record.state
        if record.state == "ended":
            self.last_state.pop(record.session_id, None)
        else:
            self.last_state[record.session_id] = record.state
        if changed:
            snapshot["_event"] = {"kind": record.state, "data": {
                k: v for k, v in (("endReason", record.end_reason), ("endDetail", record.end_detail or None),
                                  ("queuePosition", record.queue_position), ("start", snapshot["start"]))
                if v is not None}}
        self.queue.put_nowait(snapshot)

    def save(self, record: SessionRecord, event: str, data: dict) -> None:
        """Store `record` again, as it is now, with an event that is not a change of state (a
        recording finished or expired); in order with the writes queued before it."""
        snapshot = record.to_public()
        snapshot["_event"] = {"kind": event, "data": data}
        self.queue.put_nowait(snapshot)

    async def _write(self) -> None:
        while (snapshot := await self.queue.get()) is not None:
            event = snapshot.pop("_event", None)
            delay = 0.5
            while True:  # in order: a record waits for the store, and the next ones wait for it
                try:
                    await self.store.save_session(snapshot)
                    if event is not None:
                        await self.store.add_event(snapshot["sessionId"], event["kind"], event["data"])
                        event = None
                    break
                except Exception as exc:  # noqa: BLE001 - a store hiccup must not end calls: retried
                    log.warning("session %s: not stored yet (%s); retry in %.1fs", snapshot["sessionId"], exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX_S, delay * 2)

    async def aclose(self) -> None:
        """Write what is queued, then stop."""
        if self.task is not None:
            self.queue.put_nowait(None)
            await self.task
