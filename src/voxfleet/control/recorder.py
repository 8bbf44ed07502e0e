"""Writes session records to the store in the background, in order, never blocking a call."""

from __future__ import annotations

import asyncio
import logging

from voxfleet.scheduler.sessions import SessionRecord
from voxfleet.storage.store import Store

log = logging.getLogger(__name__)


class SessionRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._write(), name="session-recorder")

    def record(self, record: SessionRecord) -> None:
        """The service's on_change hook: snapshot now, write soon."""
        self.queue.put_nowait(record.to_public())

    async def _write(self) -> None:
        while (snapshot := await self.queue.get()) is not None:
            try:
                await self.store.save_session(snapshot)
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not end calls; it is logged
                log.error("session %s: could not be stored: %s", snapshot["sessionId"], exc)

    async def aclose(self) -> None:
        """Write what is queued, then stop."""
        if self.task is not None:
            self.queue.put_nowait(None)
            await self.task
