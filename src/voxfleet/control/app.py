"""The ASGI app: Pipecat-runner-compatible session routes, voxfleet's /v1 API and the website."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from voxfleet import __version__
from voxfleet.config import Settings
from voxfleet.control.deployment import SessionIceServers, ops_router
from voxfleet.control.errors import error_response, install_error_handlers
from voxfleet.control.auth import Auth
from voxfleet.control.telephony import WS_PATH, base_url, stream_tokens, telephony_router, ws_base
from voxfleet.exceptions import InvalidRequest, RequestTooLarge, SessionNotFound
from voxfleet.scheduler.service import SessionService
from voxfleet.storage.store import Store
from voxfleet.transports.signaling import check_candidates, check_offer_sdp

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
REGION_HEADER = "X-Voxfleet-Region"


class Readiness(Protocol):
    def ready(self) -> bool: ...


# -- request bodies --------------------------------------------------------------------------
class StartRequest(BaseModel):
    """Body of POST /start, as Pipecat's runner and client-js send it."""

    model_config = ConfigDict(extra="allow")
    transport: Literal["webrtc", "websocket"] = Field(
        default="webrtc", description="webrtc (SmallWebRTC), or websocket: answer wsUrl + a single-use token.")
    body: dict[str, Any] | None = Field(default=None, description="Passed to the bot as runner_args.body.")
    agent: str | None = Field(default=None, description="voxfleet: which agent (default: the first).")
    region: str | None = Field(
        default=None, max_length=64,
        description="voxfleet: the region to run in (else header X-Voxfleet-Region); nearer ones are the fallback.")
    enableDefaultIceServers: bool = False


class OfferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sdp: str
    type: str
    pc_id: str | None = None
    restart_pc: bool | None = None
    request_data: Any | None = None
    requestData: Any | None = None


class Candidate(BaseModel):
    candidate: str
    sdp_mid: str
    sdp_mline_index: int


class PatchRequest(BaseModel):
    pc_id: str
    candidates: list[Candidate]


class StartResponse(BaseModel):
    """For {"transport": "websocket"} the body is {wsUrl, token} and the session id comes in the
    X-Voxfleet-Session-Id header (the official WebSocket client accepts no other keys)."""

    sessionId: str
    iceConfig: dict[str, Any] | None = None
    queued: bool = False
    queuePosition: int | None = None


class OfferResponse(BaseModel):
    sdp: str
    type: str
    pc_id: str


def create_app(settings: Settings, service: SessionService, auth: Auth, store: Store,
               ice: SessionIceServers, llm: Readiness | None = None) -> FastAPI:
    app = FastAPI(
        title="voxfleet",
        version=__version__,
        description="Self-hosted production platform for Pipecat voice agents.",
    )
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        allow_credentials="*" not in settings.cors_origins,
    )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return error_response(400, f"Content-Length: not a number (got {declared!r})", "INVALID_REQUEST")
            if int(declared) > settings.max_body_bytes:
                exc = RequestTooLarge(int(declared), settings.max_body_bytes)
                return error_response(413, str(exc), exc.code)
        elif request.method in ("POST", "PATCH", "PUT"):
            body = await request.body()  # chunked upload: measure what arrived
            if len(body) > settings.max_body_bytes:
                exc = RequestTooLarge(len(body), settings.max_body_bytes)
                return error_response(413, str(exc), exc.code)
        return await call_next(request)

    default_agent = settings.agents[0].name
    tokens = stream_tokens(settings)

    # -- Pipecat runner / Pipecat Cloud compatible routes --------------------------------
    private = [Depends(auth.require_private)]

    async def start(request: StartRequest, agent: str, http_request: Request) -> StartResponse | JSONResponse:
        await auth.require_start(http_request, agent)
        region = request.region or http_request.headers.get(REGION_HEADER) or None
        if region is not None and len(region) > 64:
            raise InvalidRequest(REGION_HEADER, region, "longer than 64 characters")
        record = await service.start_session(agent, request.body or {}, transport=request.transport, region=region)
        queued = {"queued": record.queue_position is not None, "queuePosition": record.queue_position}
        if request.transport == "websocket":
            # Exactly {wsUrl, token}: @pipecat-ai/websocket-transport refuses any other key in the
            # parameters startBotAndConnect hands it. The session id (also the token's first
            # part) and the queue position travel as headers.
            headers = {"X-Voxfleet-Session-Id": record.session_id}
            if record.queue_position is not None:
                headers["X-Voxfleet-Queue-Position"] = str(record.queue_position)
            return JSONResponse({"wsUrl": ws_base(base_url(settings, http_request)) + WS_PATH,
                                 "token": tokens.mint(record.session_id)}, headers=headers)
        return StartResponse(sessionId=record.session_id, iceConfig={"iceServers": ice.for_session(record.session_id)},
                             **queued)

    @app.post("/start", response_model=StartResponse, response_model_exclude_none=True, tags=["sessions"])
    async def start_session(request: StartRequest, http_request: Request) -> StartResponse:
        """Start a session (Pipecat runner contract); the bot process forks right away."""
        return await start(request, request.agent or default_agent, http_request)

    @app.post("/v1/public/{agent}/start", response_model=StartResponse, tags=["sessions"])
    async def start_public(agent: str, request: StartRequest, http_request: Request) -> StartResponse:
        """Start a session of `agent` (Pipecat Cloud route shape)."""
        return await start(request, agent, http_request)

    @app.post("/sessions/{session_id}/api/offer", response_model=OfferResponse, tags=["signaling"])
    @app.post("/v1/public/{agent}/sessions/{session_id}/api/offer", response_model=OfferResponse,
              tags=["signaling"], include_in_schema=False)
    async def offer(session_id: str, request: OfferRequest, agent: str | None = None) -> dict[str, Any]:
        """Relay a SmallWebRTC offer to the session's bot; return its answer."""
        check_offer_sdp(request.sdp, request.type)
        relay = {
            "sdp": request.sdp, "type": request.type, "pc_id": request.pc_id,
            "restart_pc": request.restart_pc, "request_data": request.request_data or request.requestData,
        }
        return await service.offer(session_id, relay)

    @app.patch("/sessions/{session_id}/api/offer", tags=["signaling"])
    @app.patch("/v1/public/{agent}/sessions/{session_id}/api/offer", tags=["signaling"], include_in_schema=False)
    async def ice_candidates(session_id: str, request: PatchRequest, agent: str | None = None) -> dict[str, str]:
        """Relay trickled ICE candidates to the session's bot."""
        candidates = [c.model_dump() for c in request.candidates]
        check_candidates(candidates)
        await service.add_ice_candidates(session_id, request.pc_id, candidates)
        return {"status": "success"}

    # -- voxfleet API ------------------------------------------------------------------------
    @app.get("/v1/agents", tags=["v1"])
    async def list_agents() -> dict[str, Any]:
        preload = getattr(service.backend, "preload_status", None)
        return {"agents": [{"name": a.name, "description": a.description, "default": a.name == default_agent,
                            **({"preload": preload(a.name)} if preload is not None else {})}
                           for a in settings.agents]}

    @app.get("/v1/sessions", tags=["v1"], dependencies=private)
    async def list_sessions(limit: int = Query(default=50, ge=1, le=1000)) -> dict[str, Any]:
        """Live sessions, then the most recently ended ones (from the store: across restarts)."""
        in_memory = service.table.recent(limit)
        live = [r.to_public() for r in in_memory if r.state != "ended"]
        seen = {s["sessionId"] for s in live}
        stored = [s for s in await store.list_sessions(limit) if s["sessionId"] not in seen]
        recent = {r.session_id: r.to_public() for r in in_memory if r.state == "ended"}
        return {"sessions": (live + [recent.get(s["sessionId"], s) for s in stored])[:limit]}

    @app.get("/v1/sessions/{session_id}", tags=["v1"], dependencies=private)
    async def get_session(session_id: str) -> dict[str, Any]:
        try:
            return service.get(session_id).to_public()
        except SessionNotFound:
            stored = await store.get_session(session_id)
            if stored is None:
                raise
            return stored

    @app.delete("/v1/sessions/{session_id}", tags=["v1"], dependencies=private)
    async def hang_up(session_id: str) -> dict[str, Any]:
        record = await service.hang_up(session_id)
        return record.to_public()

    @app.get("/v1/capacity", tags=["v1"], dependencies=private)
    async def capacity() -> dict[str, Any]:
        """Capacity, reserved and free per resource (invariant: free + reserved == capacity);
        warm, warming, active per agent; the queue."""
        return service.capacity()

    @app.get("/metrics", tags=["ops"], include_in_schema=False, dependencies=private)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        checks = {"templates": service.backend.ready(), "accepting": service.accepting,
                  "llm": llm.ready() if llm is not None else True}
        ok = all(checks.values())
        body = {"status": "ok" if ok else "starting", "checks": checks, "runtime": service.backend.status(),
                "sessions": {"live": service.table.count()}, "auth": await auth.enabled()}
        return JSONResponse(body, status_code=200 if ok else 503)

    app.include_router(ops_router())  # /livez
    app.include_router(telephony_router(settings, service, tokens))

    # -- website ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(WEB_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR / "static", check_dir=False), name="static")

    return app
