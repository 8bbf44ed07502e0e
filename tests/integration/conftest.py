"""The ASGI app in-process, over real parts: a store on a real SQLite file, a SessionService over
the real local backend (template processes forking the tone bot, ``voxfleet/bots/tone.py``),
API keys checked. Requests go through ``httpx.ASGITransport`` on the test's own event loop, the
one the service runs on; nothing listens on a port.

The parts are assembled as ``control/server.py``'s ``serve()`` assembles them, minus what this
layer does not test (the local LLM, webhooks out, the resume window, uvicorn).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
from voxfleet.bots import tone
from voxfleet.config import AgentSpec, Settings
from voxfleet.control.app import build_app, create_app
from voxfleet.control.auth import Auth
from voxfleet.control.deployment import session_ice_servers
from voxfleet.control.recorder import SessionRecorder
from voxfleet.control import server
from voxfleet.control.server import build_service
from voxfleet.runtime.local.backend import LocalBackend
from voxfleet.scheduler.service import SessionService
from voxfleet.storage.store import Store

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """This layer's async tests share the session's event loop: the service they talk to runs on it."""
    for item in items:
        if HERE in item.path.parents and inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


def tone_settings(tmp: Path, **overrides: object) -> Settings:
    """Two tone-bot agents, one public and one not; keys required; capacity for a few bots."""
    bot = str(Path(tone.__file__))
    values: dict[str, object] = dict(
        agents=[AgentSpec(name="tone", bot=bot, min_warm=0, pool_policy="fixed", description="a 440 Hz tone"),
                AgentSpec(name="private-tone", bot=bot, min_warm=0, pool_policy="fixed", public=False)],
        auth="required",
        database_url=f"sqlite:///{tmp}/voxfleet.db",
        runtime_dir=tmp / "run",
        port=0,
        advertised_addresses=["127.0.0.1"],
        capacity_cpu_millis=4000,  # eight agent-1x bots: no test here waits in the queue
        capacity_mem_mb=8192,
        cpu_shares=False,
        log_level="WARNING",
        twilio_auth_token=TWILIO_AUTH_TOKEN,
        twilio_account_sid=TWILIO_ACCOUNT_SID,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def local_backend(settings: Settings) -> LocalBackend:
    """The local backend as ``serve()`` builds it for these settings."""
    return server.local_backend(settings, server.bot_specs(settings), session_ice_servers(settings), {})


@dataclass
class Live:
    """A running service and its app; keys of both scopes already in its store."""

    settings: Settings
    service: SessionService
    store: Store
    auth: Auth
    app: object
    public_key: str
    private_key: str

    def client(self, key: str | None = None, app: object | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # raise_app_exceptions=False: a 500 is answered as the server answers it, not raised here
        transport = httpx.ASGITransport(app=app or self.app, raise_app_exceptions=False)  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers, timeout=30)

    async def wait_ended(self, session_id: str, timeout: float = 10.0) -> dict:
        return await wait_ended(self.service, session_id, timeout)


@asynccontextmanager
async def small_service(live: Live, tmp: Path, **overrides: object) -> AsyncIterator[tuple[SessionService, object]]:
    """A second service over the same running backend, with room for one bot (and `overrides`),
    and an app around it that shares everything else of ``live``'s."""
    service = build_service(tone_settings(tmp, capacity_cpu_millis=500, **overrides), live.service.backend)
    service.start()
    try:
        yield service, build_app(dataclasses.replace(live.app.state.voxfleet, service=service))
    finally:
        await service.aclose()
        live.service.backend.on_nodes_changed = live.service.sync_nodes  # the new service took the hook


async def wait_ended(service: SessionService, session_id: str, timeout: float = 10.0) -> dict:
    """The session's record once it has ended (its bot's process is gone), or as it is at `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = service.get(session_id).to_public()
        if record["state"] == "ended" or asyncio.get_running_loop().time() > deadline:
            return record
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    settings = tone_settings(tmp_path_factory.mktemp("integration"))
    backend = local_backend(settings)
    service = build_service(settings, backend)
    store = Store(settings.database_url)
    await store.migrate()
    recorder = SessionRecorder(store)
    recorder.start()
    service.on_change = recorder.record
    auth = Auth(store, settings.auth, {a.name for a in settings.agents if a.public})
    app = create_app(settings, service, auth, store, session_ice_servers(settings))
    public_key, _ = await store.create_key("public", "web")
    private_key, _ = await store.create_key("private", "ops")
    try:
        await backend.start()
        service.start()
        yield Live(settings, service, store, auth, app, public_key, private_key)
    finally:
        await backend.aclose()
        await service.aclose()
        await recorder.aclose()
        await store.close()
