"""An agent's template killed, stalled or unable to fork, with real processes: live calls carry
on, the template is restarted, a start that needed it fails promptly with start_failed, the next
session works and no reservation leaks.

The tone agent keeps these fast. Polling is async: a call's media runs on this event loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

BOT_START_TIMEOUT_S = 20.0
FORK_TIMEOUT_S = 5.0  # LocalBackend's default
PIDS = Path("/sys/fs/cgroup/pids")  # cgroup v1's pids controller


def tone_server(tmp_path: Path, min_warm: int) -> Server:
    advertise_addresses(["127.0.0.1"])
    config = tmp_path / "voxfleet.toml"
    config.write_text(f"bot_start_timeout_s = {BOT_START_TIMEOUT_S}\n"
                      f'[[agents]]\nname = "tone"\nbot = "{Path(tone.__file__)}"\nmin_warm = {min_warm}\n'
                      'pool_policy = "fixed"\n')
    return Server(env={"VOXFLEET_CONFIG": str(config)})


async def until(check: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


class Api:
    def __init__(self, server: Server) -> None:
        self.http = httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=10)

    async def get(self, path: str) -> Any:
        reply = await self.http.get(path)
        assert reply.status_code in (200, 503), reply.text
        return reply.json()

    async def template(self) -> dict[str, Any]:
        return (await self.get("/healthz"))["runtime"]["templates"]["tone"]

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self.get(f"/v1/sessions/{session_id}")

    async def ended(self, session_id: str, timeout: float) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            record = await self.session(session_id)
            return record if record["state"] == "ended" else None
        return await until(check, timeout)

    async def warm(self, count: int, timeout: float) -> None:
        async def check() -> bool:
            return (await self.get("/v1/capacity"))["agents"]["tone"]["warm"] == count
        await until(check, timeout)

    async def restarted(self, old_pid: int, restarts: int, timeout: float) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            status = await self.template()
            ready = status["ready"] and status["pid"] != old_pid and status["restarts"] == restarts
            return status if ready else None
        return await until(check, timeout)

    async def settled(self, timeout: float = 10) -> dict[str, Any]:
        """Once no bot is starting or stopping: every reservation is a live bot's, and the ledger adds up."""
        async def check() -> dict[str, Any] | None:
            cap, health = await self.get("/v1/capacity"), await self.get("/healthz")
            pool = cap["agents"]["tone"]
            bots = pool["warm"] + pool["warming"] + pool["active"]
            return cap if cap["reservations"] == bots == health["runtime"]["bots"] else None
        cap = await until(check, timeout)
        assert cap["invariant_ok"]
        return cap

    async def aclose(self) -> None:
        await self.http.aclose()


async def call(server: Server) -> WebRTCCaller:
    caller = WebRTCCaller(server.url, headers=server.headers)
    await caller.connect()
    await caller.wait_first_audio(timeout=20)
    return caller


@pytest.fixture(scope="module")
def cold_server(tmp_path_factory):
    """No warm pool: every session needs a fork from the template."""
    server = tone_server(tmp_path_factory.mktemp("cold"), min_warm=0)
    yield server
    server.stop()


async def test_kill_9_of_the_template_keeps_live_calls_and_restarts_it(tmp_path):
    server = tone_server(tmp_path, min_warm=1)
    api = Api(server)
    callers: list[WebRTCCaller] = []
    try:
        await api.warm(1, timeout=20)
        callers.append(first := await call(server))
        await api.warm(1, timeout=15)  # its replacement
        old = await api.template()
        os.kill(old["pid"], signal.SIGKILL)
        status = await api.restarted(old["pid"], restarts=1, timeout=20)
        assert status["last_exit"]["signal"] == signal.SIGKILL and status["last_exit"]["code"] is None
        assert status["in_backoff"] is False
        live = await api.session(first.result.session_id)
        assert live["state"] == "active"  # the call outlived its template
        os.kill(live["pid"], 0)

        # the warm bot the dead template forked takes the next call; the new template refills the pool
        callers.append(second := await call(server))
        assert (await api.session(second.result.session_id))["start"] == "warm"
        await api.warm(1, timeout=20)
        await api.settled()
        for caller in callers:
            await caller.close()
        for caller in callers:  # their template is gone: their exits are still seen, by pid
            record = await api.ended(caller.result.session_id, timeout=10)
            assert record["endReason"] == "hangup", record
        cap = await api.settled()
        assert cap["agents"]["tone"]["active"] == 0 and cap["reservations"] == 1  # the warm bot
    finally:
        for caller in callers:
            await caller.close()
        await api.aclose()
        server.stop()


async def test_a_stopped_template_fails_the_start_promptly_and_is_restarted(cold_server):
    api = Api(cold_server)
    old = await api.template()
    try:
        os.kill(old["pid"], signal.SIGSTOP)
        started = time.monotonic()
        reply = await api.http.post("/start", json={})
        assert reply.status_code == 200, reply.text
        record = await api.ended(reply.json()["sessionId"], timeout=FORK_TIMEOUT_S + 5)
        took = time.monotonic() - started
        assert record["endReason"] == "start_failed", record
        # seen stopped for liveness.stopped_s (3 s) and killed, or (whichever comes first) its
        # fork overdue after FORK_TIMEOUT_S: either way well before bot_start_timeout
        assert "not forked" in record["endDetail"] or "did not fork bot" in record["endDetail"], record
        assert 2.5 < took < BOT_START_TIMEOUT_S / 2
        status = await api.restarted(old["pid"], restarts=old["restarts"] + 1, timeout=20)
        assert status["last_exit"]["signal"] == signal.SIGKILL
        await api.settled()

        caller = await call(cold_server)
        try:
            assert (await api.session(caller.result.session_id))["start"] == "cold"
        finally:
            await caller.close()
        await api.ended(caller.result.session_id, timeout=10)
        cap = await api.settled()
        assert cap["reservations"] == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old["pid"], signal.SIGKILL)  # never left stopped, whatever failed
        await api.aclose()


@contextlib.contextmanager
def held_to_one_process(pid: int) -> Iterator[None]:
    """`pid` in a pids cgroup where it is the only process allowed: its fork fails with EAGAIN."""
    group = PIDS / f"voxfleet-test-{pid}"
    try:
        group.mkdir()
        (group / "pids.max").write_text("1")
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        if group.exists():
            group.rmdir()
        pytest.skip(f"no pids cgroup to hold the template to one process ({exc})")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            (PIDS / "cgroup.procs").write_text(str(pid))
        group.rmdir()


async def test_a_template_that_cannot_fork_fails_the_start_at_once_and_serves_on(cold_server):
    api = Api(cold_server)
    try:
        await until(lambda: _ready(api), 20)  # after a restart by the test before
        status = await api.template()
        with held_to_one_process(status["pid"]):
            started = time.monotonic()
            reply = await api.http.post("/start", json={})
            record = await api.ended(reply.json()["sessionId"], timeout=5)
            assert time.monotonic() - started < 2
        assert record["endReason"] == "start_failed", record
        assert "could not fork bot" in record["endDetail"] and "Errno 11" in record["endDetail"]
        after = await api.template()
        assert (after["pid"], after["restarts"], after["ready"]) == (status["pid"], status["restarts"], True)

        caller = await call(cold_server)  # the same template forks the next session
        await caller.close()
        await api.ended(caller.result.session_id, timeout=10)
        assert (await api.settled())["reservations"] == 0
    finally:
        await api.aclose()


async def _ready(api: Api) -> bool:
    return bool((await api.template())["ready"])
