"""What the routes need from the running service, in one typed object on ``app.state``.

``create_app`` builds one ``AppState`` and stores it as ``app.state.voxfleet``; every router
(``sessions_api``, ``telephony``, ``ops``, ``pages``) is a module-level ``APIRouter`` whose routes
take it through the ``State`` dependency, so a test can build an app around any state it likes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Annotated, Protocol

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from voxfleet.config import Settings
from voxfleet.control.auth import Auth
from voxfleet.exceptions import SessionNotFound
from voxfleet.scheduler.service import SessionService
from voxfleet.storage.store import Store
from voxfleet.transports.call_progress import CallProgress
from voxfleet.transports.plivo_auth import NonceLedger
from voxfleet.transports.signaling import CandidateFilter
from voxfleet.transports.stream_tokens import StreamTokens
from voxfleet.transports.telnyx_auth import SeenSignatures
from voxfleet.transports.turn import SessionIceServers


class Readiness(Protocol):
    def ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AppState:
    """The service's parts the HTTP and WebSocket routes use."""

    settings: Settings
    service: SessionService
    auth: Auth
    store: Store
    ice: SessionIceServers  # TURN credentials minted per session
    tokens: StreamTokens  # single-use tokens of media WebSockets (phone calls, generic clients)
    llm: Readiness | None = None  # the local LLM server, when voxfleet runs one
    candidates: CandidateFilter = field(default_factory=lambda: CandidateFilter([]))  # callers' ICE candidates
    call_sessions: OrderedDict[str, str] = field(default_factory=OrderedDict)  # Twilio CallSid -> session id
    outbound: OrderedDict[str, CallProgress] = field(default_factory=OrderedDict)  # session id -> its dialled call
    plivo_nonces: NonceLedger = field(default_factory=NonceLedger)  # Plivo webhooks' nonces, against replays
    telnyx_seen: SeenSignatures = field(default_factory=SeenSignatures)  # Telnyx webhooks' replay window

    @property
    def default_agent(self) -> str:
        return self.settings.agents[0].name

    async def public_session(self, session_id: str) -> dict[str, Any]:
        """A session's public record: in memory while it is recent, else from the store
        (SessionNotFound if neither has it)."""
        try:
            return self.service.get(session_id).to_public()
        except SessionNotFound:
            stored = await self.store.get_session(session_id)
            if stored is None:
                raise
            return stored


def app_state(connection: HTTPConnection) -> AppState:
    """The ``AppState`` of the app serving this request or WebSocket."""
    state: AppState = connection.app.state.voxfleet
    return state


State = Annotated[AppState, Depends(app_state)]


async def require_private(request: Request, state: State) -> None:
    """Route dependency: a private API key (when keys are checked)."""
    await state.auth.require_private(request)
