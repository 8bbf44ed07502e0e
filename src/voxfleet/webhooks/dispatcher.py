"""Delivering the outbox: at-least-once, in the background, with exponential backoff.

Events are written to the store first (so a restart loses none), then a single task delivers
whatever is due. It sleeps until the next due time or until a new event is queued — no polling
loop — and a slow or failing receiver only delays its own retries, never a call.

Store errors lose nothing: an event whose write fails is written again with backoff until it is
stored (at most ``MAX_UNSTORED`` wait in memory; beyond that the oldest is logged and dropped),
and the delivery loop is supervised: an error is logged and the loop resumes after a backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import httpx

from voxfleet.storage.store import Store
from voxfleet.webhooks.signing import headers as signed_headers

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 600.0
STORE_RETRY_MAX_S = 30.0
MAX_UNSTORED = 10_000


def backoff_s(attempts: int) -> float:
    """Seconds before retry number `attempts` (1, 2, 4, ... capped at 10 min, +-20% jitter)."""
    base = min(MAX_BACKOFF_S, 2.0 ** max(0, attempts - 1))
    return base * random.uniform(0.8, 1.2)


class WebhookDispatcher:
    def __init__(self, store: Store, secrets_by_url: dict[str, str], *, timeout_s: float = 5.0,
                 on_result: Any = None) -> None:
        self.store = store
        self.secrets = secrets_by_url
        self.timeout_s = timeout_s
        self.on_result = on_result or (lambda ok: None)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def enqueue(self, event_type: str, url: str, payload: dict[str, Any]) -> None:
        """Persist then deliver; returns at once (the write and the delivery run in the background)."""
        async def persist() -> None:
            delay = 0.5
            while True:
                try:
                    await self.store.enqueue_webhook(event_type, url, payload)
                    break
                except Exception as exc:  # noqa: BLE001 - retried until stored; the call goes on
                    if len(self.pending) > MAX_UNSTORED:
                        log.error("webhook %s for %s lost: %d events wait for the store (%s)", event_type, url,
                                  len(self.pending), exc)
                        return
                    log.warning("webhook %s for %s not stored yet (%s); retry in %.1fs", event_type, url, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(STORE_RETRY_MAX_S, delay * 2)
            self.wake.set()

        task = asyncio.create_task(persist(), name=f"webhook-enqueue:{event_type}")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _run(self) -> None:
        """The delivery loop, supervised: it never ends on an error, it backs off and resumes."""
        delay = 0.5
        while True:
            try:
                await self._deliver_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, and the loop goes on
                log.error("webhook dispatcher: %s: %s; resuming in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_MAX_S, delay * 2)

    async def _deliver_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while True:
                self.wake.clear()
                for row in await self.store.due_webhooks(time.time()):
                    await self._deliver(client, row)
                next_at = await self.store.next_webhook_at()
                delay = None if next_at is None else max(0.0, next_at - time.time())
                if delay == 0.0:
                    continue
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def _deliver(self, client: httpx.AsyncClient, row: Any) -> None:
        body = json.dumps({"type": row.event_type, "timestamp": row.created_at, "data": row.payload},
                          separators=(",", ":")).encode()
        secret = self.secrets.get(row.url, "")
        try:
            reply = await client.post(row.url, content=body,
                                      headers=signed_headers(secret, row.id, int(time.time()), body))
            ok, error = 200 <= reply.status_code < 300, f"HTTP {reply.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # a malformed whsec_ secret: this event waits, the others go on
            ok, error = False, f"cannot sign: {exc}"
        if ok:
            await self.store.webhook_delivered(row.id)
        else:
            retry_in = backoff_s(row.attempts + 1)
            await self.store.webhook_failed(row.id, time.time() + retry_in, error)
            log.warning("webhook %s %s to %s failed (%s); retry in %.0fs", row.id, row.event_type, row.url,
                        error, retry_in)
        self.on_result(ok)

    async def aclose(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
