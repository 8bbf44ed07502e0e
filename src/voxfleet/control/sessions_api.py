"""The session API: Pipecat-runner and Pipecat-Cloud compatible routes, and voxfleet's /v1 sessions.

- ``POST /start`` and ``POST /v1/public/{agent}/start``: admit a session (see ``auth`` for keys);
- ``POST|PATCH /sessions/{id}/api/offer`` (and the Pipecat Cloud shape under ``/v1/public``):
  SmallWebRTC signaling relayed to the session's bot;
- ``GET /v1/agents``, ``GET /v1/sessions``, ``GET|DELETE /v1/sessions/{id}``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from voxfleet.control.state import AppState, State, require_private
from voxfleet.control.telephony import WS_PATH, base_url, ws_base
from voxfleet.exceptions import InvalidRequest
from voxfleet.transports.signaling import check_candidates, check_offer_sdp

REGION_HEADER = "X-Voxfleet-Region"

log = logging.getLogger(__name__)

router = APIRouter()
private = [Depends(require_private)]


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
    candidate: str = Field(max_length=1024)
    sdp_mid: str = Field(max_length=64)
    sdp_mline_index: int


class PatchRequest(BaseModel):
    pc_id: str = Field(max_length=256)
    candidates: list[Candidate] = Field(max_length=32, description="At most 32 per request (64 per session).")


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


# -- Pipecat runner / Pipecat Cloud compatible routes ----------------------------------------
async def start(state: AppState, request: StartRequest, agent: str,
                http_request: Request) -> StartResponse | JSONResponse:
    client = await state.auth.require_start(http_request, agent)
    if client is not None and client.startswith("key:"):  # a keyless client's rate: app.AnonymousStartRate
        state.service.check_rate(client)
    region = request.region or http_request.headers.get(REGION_HEADER) or None
    if region is not None and len(region) > 64:
        raise InvalidRequest(REGION_HEADER, region, "longer than 64 characters")
    record = await state.service.start_session(agent, request.body or {}, transport=request.transport, region=region,
                                               client=client)
    queued = {"queued": record.queue_position is not None, "queuePosition": record.queue_position}
    if request.transport == "websocket":
        # Exactly {wsUrl, token}: @pipecat-ai/websocket-transport refuses any other key in the
        # parameters startBotAndConnect hands it. The session id (also the token's first
        # part) and the queue position travel as headers.
        headers = {"X-Voxfleet-Session-Id": record.session_id}
        if record.queue_position is not None:
            headers["X-Voxfleet-Queue-Position"] = str(record.queue_position)
        return JSONResponse({"wsUrl": ws_base(base_url(state.settings, http_request)) + WS_PATH,
                             "token": state.tokens.mint(record.session_id)}, headers=headers)
    return StartResponse(sessionId=record.session_id,
                         iceConfig={"iceServers": state.ice.for_session(record.session_id)}, **queued)


@router.post("/start", response_model=StartResponse, response_model_exclude_none=True, tags=["sessions"])
async def start_session(request: StartRequest, http_request: Request, state: State) -> StartResponse:
    """Start a session (Pipecat runner contract); the bot process forks right away."""
    return await start(state, request, request.agent or state.default_agent, http_request)


@router.post("/v1/public/{agent}/start", response_model=StartResponse, tags=["sessions"])
async def start_public(agent: str, request: StartRequest, http_request: Request, state: State) -> StartResponse:
    """Start a session of `agent` (Pipecat Cloud route shape)."""
    return await start(state, request, agent, http_request)


@router.post("/sessions/{session_id}/api/offer", response_model=OfferResponse, tags=["signaling"])
@router.post("/v1/public/{agent}/sessions/{session_id}/api/offer", response_model=OfferResponse,
             tags=["signaling"], include_in_schema=False)
async def offer(session_id: str, request: OfferRequest, state: State, agent: str | None = None) -> dict[str, Any]:
    """Relay a SmallWebRTC offer to the session's bot; return its answer."""
    check_offer_sdp(request.sdp, request.type)
    sdp, dropped = state.candidates.offer(request.sdp)
    if dropped:
        log.info("session %s: dropped %d ICE candidate(s) of the offer in denied networks", session_id, dropped)
    relay = {
        "sdp": sdp, "type": request.type, "pc_id": request.pc_id,
        "restart_pc": request.restart_pc, "request_data": request.request_data or request.requestData,
    }
    return await state.service.offer(session_id, relay, agent)


@router.patch("/sessions/{session_id}/api/offer", tags=["signaling"])
@router.patch("/v1/public/{agent}/sessions/{session_id}/api/offer", tags=["signaling"], include_in_schema=False)
async def ice_candidates(session_id: str, request: PatchRequest, state: State,
                         agent: str | None = None) -> dict[str, str]:
    """Relay trickled ICE candidates to the session's bot."""
    candidates = [c.model_dump() for c in request.candidates]
    check_candidates(candidates)
    candidates, dropped = state.candidates.trickled(candidates)
    await state.service.add_ice_candidates(session_id, request.pc_id, candidates, agent)
    return {"status": "success", **({"ignored": str(dropped)} if dropped else {})}


@router.get("/sessions/{session_id}", tags=["signaling"])
async def session_status(session_id: str, state: State) -> dict[str, Any]:
    """The caller's own view of its session (the session id is the capability): its state and
    queue position, nothing of its content (the full record is private: /v1/sessions/{id})."""
    return caller_view(state.service.get(session_id).to_public())


@router.delete("/sessions/{session_id}", tags=["signaling"])
async def hang_up_own(session_id: str, state: State) -> dict[str, Any]:
    """The caller hangs up its own session."""
    return caller_view((await state.service.hang_up(session_id)).to_public())


def caller_view(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("sessionId", "agent", "state", "queuePosition", "endReason")}


# -- voxfleet API ----------------------------------------------------------------------------
@router.get("/v1/agents", tags=["v1"])
async def list_agents(state: State) -> dict[str, Any]:
    preload = getattr(state.service.backend, "preload_status", None)
    return {"agents": [{"name": a.name, "description": a.description, "default": a.name == state.default_agent,
                        **({"preload": preload(a.name)} if preload is not None else {})}
                       for a in state.settings.agents]}


@router.get("/v1/sessions", tags=["v1"], dependencies=private)
async def list_sessions(state: State, limit: int = Query(default=50, ge=1, le=1000)) -> dict[str, Any]:
    """Live sessions, then the most recently ended ones (from the store: across restarts)."""
    in_memory = state.service.table.recent(limit)
    live = [r.to_public() for r in in_memory if r.state != "ended"]
    seen = {s["sessionId"] for s in live}
    stored = [s for s in await state.store.list_sessions(limit) if s["sessionId"] not in seen]
    recent = {r.session_id: r.to_public() for r in in_memory if r.state == "ended"}
    return {"sessions": (live + [recent.get(s["sessionId"], s) for s in stored])[:limit]}


@router.get("/v1/sessions/{session_id}", tags=["v1"], dependencies=private)
async def get_session(session_id: str, state: State) -> dict[str, Any]:
    return await state.public_session(session_id)


@router.delete("/v1/sessions/{session_id}", tags=["v1"], dependencies=private)
async def hang_up(session_id: str, state: State) -> dict[str, Any]:
    record = await state.service.hang_up(session_id)
    return record.to_public()
