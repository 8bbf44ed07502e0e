"""Operating the service: readiness (/healthz), liveness (/livez), Prometheus metrics and capacity.

API keys are managed from the command line (``voxfleet keys``), straight in the store; no route
serves them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voxfleet.control.state import State, require_private

router = APIRouter()
private = [Depends(require_private)]


@router.get("/v1/capacity", tags=["v1"], dependencies=private)
async def capacity(state: State) -> dict[str, Any]:
    """Capacity, reserved and free per resource (invariant: free + reserved == capacity);
    warm, warming, active per agent; the queue."""
    return state.service.capacity()


@router.get("/metrics", tags=["ops"], include_in_schema=False, dependencies=private)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", tags=["ops"])
async def healthz(request: Request, state: State) -> JSONResponse:
    """Readiness: 200 ``{"status": "ok", "auth": ...}`` when this instance takes sessions, else 503
    (``auth``: whether API keys are checked, so a page knows to ask for one). The checks, the
    runtime's figures and the session count only for a private key (or --dev)."""
    service = state.service
    checks = {"templates": service.backend.ready(), "accepting": service.accepting,
              "llm": state.llm.ready() if state.llm is not None else True}
    ok = all(checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "starting", "auth": await state.auth.enabled()}
    if await state.auth.is_private(request):
        body.update({"checks": checks, "runtime": service.backend.status(),
                     "sessions": {"live": service.table.count()}})
        if state.llm is not None:
            body["llm"] = state.llm.status()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/livez", tags=["ops"])
async def livez() -> dict[str, str]:
    """Liveness: 200 whenever the process answers at all (starting, ready or draining).
    Readiness (may this instance take sessions) is /healthz."""
    return {"status": "alive"}
