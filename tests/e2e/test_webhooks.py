"""Lifecycle webhooks: a receiver that is down for a while (and a restart in between) still gets
every event exactly once, and the signatures verify with the Standard Webhooks reference library."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import Server, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses
from voxfleet.webhooks.signing import new_secret

pytestmark = pytest.mark.e2e

FAULTY_TONE_BOT = Path(__file__).parent / "bots" / "faulty_tone.py"  # the tone bot, made to raise or hold memory


class Receiver:
    """A plain HTTP server on a fixed loopback port that can be brought up late."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict, bytes]] = []
        self.httpd: ThreadingHTTPServer | None = None

    def up(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_webhooks_survive_receiver_outage_and_restart(tmp_path):
    advertise_addresses(["127.0.0.1"])
    port, secret = free_port(), new_secret()
    config = tmp_path / "voxfleet.toml"
    config.write_text(f'[[agents]]\nname = "tone"\nbot = "{Path(tone.__file__)}"\nmin_warm = 0\n'
                      f'pool_policy = "fixed"\nwebhook_url = "http://127.0.0.1:{port}/hooks"\n'
                      f'webhook_secret = "{secret}"\n[[agents]]\nname = "failing"\n'
                      f'bot = "{FAULTY_TONE_BOT}"\nmin_warm = 0\npool_policy = "fixed"\n'
                      f'webhook_url = "http://127.0.0.1:{port}/hooks"\nwebhook_secret = "{secret}"\n')
    receiver = Receiver(port)
    first = Server(env={"VOXFLEET_CONFIG": str(config)})
    sessions = []
    try:
        for agent, body in (("tone", {}), ("failing", {"fail": True})):
            caller = WebRTCCaller(first.url, agent=agent, body=body)
            result = await caller.connect()
            if agent == "tone":
                await caller.wait_first_audio(timeout=20)
            await caller.close()
            sessions.append(result.session_id)
            with first.client() as http:
                wait_for(lambda: http.get(f"/v1/sessions/{result.session_id}").json()["state"] == "ended", 10)
    finally:
        first.stop()  # the receiver was down the whole time: everything is still in the outbox
    receiver.up()
    second = Server(env={"VOXFLEET_CONFIG": str(config), "VOXFLEET_DATABASE_URL": first.database_url},
                    key=first.key)
    try:
        wait_for(lambda: len(receiver.received) >= 4, timeout=30)
        import time

        time.sleep(1.5)  # nothing more should arrive
    finally:
        second.stop()
        receiver.down()

    verifier = Webhook(secret)
    events = []
    for headers, body in receiver.received:
        verifier.verify(body, headers)  # raises on a bad signature or timestamp
        events.append((headers["webhook-id"], json.loads(body)))
    ids = [event_id for event_id, _ in events]
    assert len(ids) == len(set(ids)) == 4, [e["type"] for _, e in events]
    by_type = {(e["type"], e["data"]["sessionId"]): e["data"] for _, e in events}
    # the failing bot answered the offer (started), then raised (failed)
    assert set(by_type) == {("session.started", sessions[0]), ("session.ended", sessions[0]),
                            ("session.started", sessions[1]), ("session.failed", sessions[1])}
    ended = by_type[("session.ended", sessions[0])]
    assert ended["endReason"] == "hangup" and ended["start"] == "cold" and ended["durationS"] > 0
    assert ended["ttfwMs"] is None or ended["ttfwMs"] > 0  # the tone bot speaks no RTVI
    failed = by_type[("session.failed", sessions[1])]
    assert failed["endReason"] == "bot_error" and "asked to fail" in failed["endDetail"]
    # a tampered body does not verify
    headers, body = receiver.received[0]
    with pytest.raises(Exception):
        verifier.verify(body.replace(b"session", b"sessiom", 1), headers)
