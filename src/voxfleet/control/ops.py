"""Operating the service: readiness (/healthz), liveness (/livez), Prometheus metrics and capacity.

API keys are managed from the command line (``voxfleet keys``), straight in the store; no route
serves them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
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
async def healthz(state: State) -> JSONResponse:
    service = state.service
    checks = {"templates": service.backend.ready(), "accepting": service.accepting,
              "llm": state.llm.ready() if state.llm is not None else True}
    ok = all(checks.values())
    body = {"status": "ok" if ok else "starting", "checks": checks, "runtime": service.backend.status(),
            "sessions": {"live": service.table.count()}, "auth": await state.auth.enabled()}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/livez", tags=["ops"])
async def livez() -> dict[str, str]:
    """Liveness: 200 whenever the process answers at all (starting, ready or draining).
    Readiness (may this instance take sessions) is /healthz."""
    return {"status": "alive"}
