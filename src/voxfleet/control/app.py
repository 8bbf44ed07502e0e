"""The ASGI app, assembled: the session API, telephony, ops and the website, around one ``AppState``.

The routes live in their modules as module-level routers (``sessions_api``, ``telephony``,
``ops``, ``pages``); they read the service's parts from ``app.state.voxfleet`` (``control/state.py``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from voxfleet import __version__
from voxfleet.config import Settings
from voxfleet.control import (
    exotel, ops, outbound, pages, plivo, plivo_calls, recordings_api, sessions_api, telephony, telnyx,
    telnyx_calls, twilio_calls,
)
from voxfleet.control.auth import Auth
from voxfleet.control.errors import error_response, install_error_handlers
from voxfleet.control.state import AppState, Readiness, app_state
from voxfleet.exceptions import ClientLimited, RequestTooLarge
from voxfleet.scheduler.service import SessionService
from voxfleet.storage.store import Store
from voxfleet.transports.signaling import CandidateFilter, ice_server_hosts
from voxfleet.transports.turn import SessionIceServers


def create_app(settings: Settings, service: SessionService, auth: Auth, store: Store,
               ice: SessionIceServers, llm: Readiness | None = None) -> FastAPI:
    """The app of a running service (stream tokens are minted with this app's secret)."""
    return build_app(AppState(settings=settings, service=service, auth=auth, store=store, ice=ice,
                              tokens=telephony.stream_tokens(settings), llm=llm,
                              candidates=candidate_filter(settings)))


def candidate_filter(settings: Settings) -> CandidateFilter:
    """Callers' ICE candidates: none into the denied networks, except the operator's own STUN/TURN
    hosts and the addresses its bots advertise (a loopback-only setup on one machine)."""
    allowed = ice_server_hosts([url for server in settings.ice_servers for url in server.urls])
    return CandidateFilter(settings.ice_candidate_deny, allowed | set(settings.advertised_addresses))


def build_app(state: AppState) -> FastAPI:
    app = FastAPI(
        title="voxfleet",
        version=__version__,
        description="Self-hosted production platform for Pipecat voice agents.",
    )
    app.state.voxfleet = state
    install_error_handlers(app)
    app.add_middleware(
        PublicRoutesCORS,
        allow_origins=state.settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["Retry-After", "X-Voxfleet-Session-Id", "X-Voxfleet-Queue-Position"],
    )
    app.middleware("http")(limit_body)
    app.add_middleware(AnonymousStartRate, state=state)  # outermost: a flood is refused before anything else
    app.include_router(sessions_api.router)
    app.include_router(recordings_api.router)
    app.include_router(ops.router)
    app.include_router(telephony.router)
    app.include_router(outbound.router)
    app.include_router(twilio_calls.router)
    app.include_router(plivo.router)
    app.include_router(plivo_calls.router)
    app.include_router(telnyx.router)
    app.include_router(telnyx_calls.router)
    app.include_router(exotel.router)
    app.include_router(pages.router)
    app.mount("/static", pages.static_files(), name="static")
    return app


PRIVATE_PREFIXES = ("/v1/sessions", "/v1/capacity", "/metrics")


class PublicRoutesCORS(CORSMiddleware):
    """CORS for the configured origins on the public routes only (start, signaling, agents,
    health): a private route never answers a foreign page's preflight nor gets an
    Access-Control-Allow-Origin header, whatever ``cors_origins`` says. Keys travel as headers,
    never as cookies, so credentials are not allowed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope["path"]).startswith(PRIVATE_PREFIXES):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


START_PATH = re.compile(r"^/(start|v1/public/[^/]+/start)/?$")


class AnonymousStartRate:
    """The start rate of clients without a key, checked before routing, body parsing or anything
    else, so answering a flood costs as little as it can (a keyed client's rate is checked in the
    route, once its key is known). Off with --dev."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and self.state.auth.mode != "off"
                and START_PATH.match(scope["path"])
                and not any(name == b"authorization" for name, _ in scope["headers"])):
            client = f"addr:{scope['client'][0] if scope.get('client') else 'unknown'}"
            try:
                self.state.service.check_rate(client)
            except ClientLimited as exc:
                await error_response(429, str(exc), exc.code, retry_after_s=exc.retry_after_s)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Refuse a body over ``max_body_bytes`` before any route reads it (413)."""
    max_body_bytes = app_state(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return error_response(400, f"Content-Length: not a number (got {declared!r})", "INVALID_REQUEST")
        if int(declared) > max_body_bytes:
            exc = RequestTooLarge(int(declared), max_body_bytes)
            return error_response(413, str(exc), exc.code)
    elif request.method in ("POST", "PATCH", "PUT"):
        body = await request.body()  # chunked upload: measure what arrived
        if len(body) > max_body_bytes:
            exc = RequestTooLarge(len(body), max_body_bytes)
            return error_response(413, str(exc), exc.code)
    return await call_next(request)
