"""A PostgreSQL restart mid-run loses no webhook event and no session record: writes the store
refuses while it is down are retried until it is back (a real server, stopped and started)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg

from voxfleet.control.recorder import SessionRecorder
from voxfleet.scheduler.sessions import SessionRecord
from voxfleet.storage.store import Store
from voxfleet.webhooks.dispatcher import WebhookDispatcher


class Receiver:
    """A real HTTP receiver of webhooks on loopback."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.1)


async def test_a_postgresql_restart_loses_no_event_and_no_record(postgres):
    name = f"restart{int(time.time() * 1e6)}"
    conn = await asyncpg.connect(postgres.url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    store = Store(postgres.url.rsplit("/", 1)[0] + f"/{name}")
    await store.migrate()
    receiver = Receiver()
    dispatcher = WebhookDispatcher(store, {receiver.url: "whsec_" + "A" * 32})
    recorder = SessionRecorder(store)
    dispatcher.start()
    recorder.start()
    try:
        await store.list_sessions(1)  # the pool holds a connection that the restart will break
        await asyncio.to_thread(postgres.stop)
        records = [SessionRecord(session_id=f"s-{i}", agent="tone", transport="webrtc") for i in range(3)]
        for i, record in enumerate(records):
            recorder.record(record)
            dispatcher.enqueue("session.ended", receiver.url, {"sessionId": record.session_id, "n": i})
        await asyncio.sleep(2.0)  # every write is refused meanwhile, and retried
        assert receiver.received == []
        await asyncio.to_thread(postgres.start)
        await until(lambda: len(receiver.received) == 3, timeout=45)
        assert sorted(e["data"]["n"] for e in receiver.received) == [0, 1, 2]
        stored = {s["sessionId"] for s in await store.list_sessions(10)}
        assert stored == {"s-0", "s-1", "s-2"}
        assert await store.next_webhook_at() is None  # nothing left undelivered
    finally:
        await recorder.aclose()
        await dispatcher.aclose()
        await store.close()
        receiver.server.shutdown()
