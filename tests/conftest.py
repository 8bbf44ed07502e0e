"""Shared test helpers: start a real `voxfleet serve` on a free loopback port."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


class Server:
    """A `voxfleet serve` process; its output is kept and echoed on failure."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 240,
                 key: str | None = None) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_lines: list[str] = []
        # the admin key the server prints at its first start (or `key`, for a restart on the same store)
        self.key = key
        self.data_dir = tempfile.mkdtemp(prefix="voxfleet-test-")
        self.database_url = f"sqlite:///{self.data_dir}/voxfleet.db"
        self.url = ""
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0", "--advertise", "127.0.0.1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "VOXFLEET_CONFIG": "/nonexistent.toml", "VOXFLEET_DATABASE_URL": self.database_url,
                 **(env or {})},
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(ready_timeout):
            self.stop()
            raise RuntimeError("voxfleet serve did not become ready:\n" + self.log_tail())

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log_lines.append(line.rstrip())
            created = re.search(r"voxfleet: created the admin API key \(.*\): (\S+)", line)
            if created:
                self.key = created.group(1)
            match = re.search(r"voxfleet: ready, open (https?://\S+)", line)
            if match:
                self.url = match.group(1).rstrip("/")
                self._ready.set()

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log_lines[-n:])

    @property
    def headers(self) -> dict[str, str]:
        """The admin key's Authorization header (none for a --dev server)."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def client(self, *, anonymous: bool = False) -> httpx.Client:
        """An HTTP client of the server; with its admin key unless `anonymous`."""
        return httpx.Client(base_url=self.url, timeout=30, headers={} if anonymous else self.headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RestRecorder:
    """Stands in for a carrier's REST API, which cannot be reached from here: a loopback HTTP
    server that answers every request with ``reply(method, path)`` -> (status, JSON payload or
    None) and hands each to ``record(method, path, headers, body)`` (a subclass's shape of
    ``requests``)."""

    def __init__(self, suffix: str = "") -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import json

        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                api.record(self.command, self.path, self.headers, body)
                status, payload = api.reply(self.command, self.path)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_DELETE = _serve  # noqa: N815 - http.server's naming

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{suffix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, method: str, path: str, headers, body: str) -> None:
        raise NotImplementedError

    def reply(self, method: str, path: str) -> tuple[int, dict | None]:
        return 200, {}

    def close(self) -> None:
        self.server.shutdown()


async def session_of(server: "Server", session_id: str, state: str = "ended", timeout: float = 10) -> dict:
    """The session's record once it is in `state` (polled off the event loop: calls run on it)."""
    import asyncio

    def poll() -> dict:
        with server.client() as http:
            return wait_for(lambda: (r := http.get(f"/v1/sessions/{session_id}").json())["state"] == state and r,
                            timeout)
    return await asyncio.to_thread(poll)


# Twilio credentials of the tests' calls (no request leaves this machine; see test_telephony.py)
TWILIO_AUTH_TOKEN = "test-auth-token-0123456789"
TWILIO_ACCOUNT_SID = "AC" + "1" * 32
TWILIO_ENV = {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID}
PLIVO_ENV = {"PLIVO_AUTH_ID": "MA" + "1" * 18, "PLIVO_AUTH_TOKEN": "test-plivo-auth-token-0123"}  # test_plivo.py
EXOTEL_ENV = {"EXOTEL_API_KEY": "test-exotel-key", "EXOTEL_API_TOKEN": "test-exotel-token-0123456789"}
from voxfleet.bench.telnyx_caller import LOCAL_ACCOUNT as TELNYX_ACCOUNT  # noqa: E402 - Telnyx's keys, likewise


@pytest.fixture(scope="session")
def assistant_server():
    """The default offline assistant, as `voxfleet serve` runs it (answering phone calls too)."""
    server = Server(env={**TWILIO_ENV, **TELNYX_ACCOUNT.env, **EXOTEL_ENV, **PLIVO_ENV})
    yield server
    server.stop()
    (ARTIFACTS / "assistant-server.log").write_text("\n".join(server.log_lines))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real 3-node Ray cluster on loopback, token auth on: the head (127.0.0.2, no bot
    resources), a node in region eu (127.0.0.3: 1 vCPU, two agent-1x bots fit) and one in region
    us (127.0.0.4: 1 vCPU but 40 kbps of uplink, one bot fits)."""
    from voxfleet.testing.ray_cluster import BotNode, LocalRayCluster

    cluster = LocalRayCluster([BotNode("127.0.0.3", "eu", 1.0, 4096), BotNode("127.0.0.4", "us", 1.0, 2048, kbps=40)])
    cluster.start()
    yield cluster
    cluster.shutdown()


def ray_env(cluster, **ray_settings) -> dict[str, str]:
    """Environment for a `voxfleet serve` on `cluster` (token auth comes from os.environ)."""
    import json

    env = {"VOXFLEET_BACKEND": "ray", "VOXFLEET_RAY__ADDRESS": cluster.address, **cluster.env()}
    for name, value in ray_settings.items():
        env[f"VOXFLEET_RAY__{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def free_udp_range(size: int) -> tuple[int, int]:
    """`size` consecutive UDP ports free on 127.0.0.1, below the kernel's ephemeral range."""
    for _ in range(50):
        first = random.randrange(20000, 32000 - size)
        held = []
        try:
            for port in range(first, first + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first, first + size - 1
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no free UDP port range found")
