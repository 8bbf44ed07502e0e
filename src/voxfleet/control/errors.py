"""The one place where errors become HTTP responses: ``{"error": message, "code": CODE}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxfleet.exceptions import (
    AtCapacity,
    CarrierError,
    CarrierNotConfigured,
    Forbidden,
    Unauthorized,
    BotError,
    InvalidRequest,
    MediaPortsExhausted,
    NotFound,
    NotReady,
    RequestTooLarge,
    SessionConflict,
    SignalingTimeout,
    StreamProtocolError,
    StreamRejected,
    StreamTokenInvalid,
    Unplaceable,
    VoxfleetError,
    field_problem,
)

log = logging.getLogger(__name__)

STATUS = (
    (InvalidRequest, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RequestTooLarge, 413),
    (NotFound, 404),
    (SessionConflict, 409),
    (CarrierNotConfigured, 409),
    (NotReady, 503),
    (AtCapacity, 429),
    (Unplaceable, 422),
    (SignalingTimeout, 504),
    (BotError, 502),
    (CarrierError, 502),
    (MediaPortsExhausted, 503),
)


# WebSocket close codes: 4003 as Pipecat's runner uses for a refused token; 1007/1008 (RFC 6455)
WS_CLOSE = (
    (StreamTokenInvalid, 4003),
    (StreamProtocolError, 1007),
    (StreamRejected, 1008),
    (VoxfleetError, 1011),
)


def ws_close_for(exc: VoxfleetError) -> tuple[int, str]:
    """The close code and reason a media WebSocket gets for `exc`."""
    code = next((code for kind, code in WS_CLOSE if isinstance(exc, kind)), 1011)
    return code, f"{exc.code}: {exc}"[:120]


def status_for(exc: VoxfleetError) -> int:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


def error_response(status: int, message: str, code: str, retry_after_s: int | None = None,
                   **extra: object) -> JSONResponse:
    if retry_after_s is None and status == 503:
        retry_after_s = 5
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse({"error": message, "code": code, **extra}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    first_field = None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        first_field = first_field or field
        if err.get("type") == "json_invalid":
            problems.append(f"body: not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})")
            continue
        problems.append(field_problem(field, err["input"], err.get("msg"), width=60) if "input" in err
                        else f"{field}: {err.get('msg')}")
    return "; ".join(problems), first_field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxfleetError)
    async def _voxfleet_error(_request: Request, exc: VoxfleetError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s: %s", exc.code, exc)
        extra = {"field": exc.field} if isinstance(exc, InvalidRequest) else {}
        retry_after = exc.retry_after_s if isinstance(exc, AtCapacity) else None
        return error_response(status, str(exc), exc.code, retry_after_s=retry_after, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _describe_validation(exc)
        return error_response(400, message, "INVALID_REQUEST", field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return error_response(exc.status_code, str(exc.detail), code)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        return error_response(500, "internal error; see the server log", "INTERNAL")
