"""Phone calls over Plivo Audio Streams.

A call: Plivo POSTs the number's answer URL, ``/v1/telephony/plivo/{agent}`` (form-encoded,
signed with X-Plivo-Signature-V3 over ``public_url`` + path + query and the nonce); voxfleet
admits a session like any other (``control/calls.py``) and answers Plivo XML:

- a bot: ``<Stream bidirectional="true" keepCallAlive="true"
  contentType="audio/x-mulaw;rate=8000" extraHeaders="voxfleettoken=<hex>">`` to
  ``/v1/telephony/plivo/stream``, then ``<Redirect>`` to ``/v1/telephony/plivo/{agent}/ended``:
  with keepCallAlive Plivo runs the next element only once the stream has ended, so that is the
  "stream ended, what next" request (the caller hears ``lost_message`` if the bot failed);
- no agent free: ``<Speak>busy_message</Speak><Wait/><Redirect>`` back here (hold), or
  ``<Speak>goodbye</Speak><Hangup/>``. Never a dead line.

The redirect URLs carry ``exp``, which Plivo's signature covers (see ``transports/plivo_auth``).
Plivo opens the stream and sends ``start``; its ``extra_headers`` carry the single-use token;
the stream is relayed to the session's bot (``control/streams.py``). When the bot ends the call,
voxfleet hangs it up through Plivo's REST API (``DELETE /v1/Account/{auth_id}/Call/{uuid}/``).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from plivo import plivoxml  # type: ignore[import-untyped]

from voxfleet.config import Settings
from voxfleet.control.calls import ConnectStream, Hold, admit_call, after_stream
from voxfleet.control.state import AppState, State
from voxfleet.control.streams import read_start, reject
from voxfleet.control.telephony import base_url, run_stream, ws_base
from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import InvalidRequest, StreamRejected, StreamTokenInvalid, \
    TelephonySignatureInvalid
from voxfleet.transports.plivo_auth import EXPIRY_PARAM, verify_request
from voxfleet.transports.plivo_media import CONTENT_TYPE, PlivoStreamCheck, extra_headers_for, without_token

log = logging.getLogger(__name__)

PLIVO_STREAM_PATH = "/v1/telephony/plivo/stream"
PLIVO_API_BASE = "https://api.plivo.com"
REDIRECT_GRACE_S = 120  # a redirect is requested after the <Speak> and <Wait> before it, or once the stream ends
CALL_FIELDS = ("CallUUID", "From", "To", "Direction", "CallStatus")

router = APIRouter(tags=["telephony"])


def verify(state: AppState, request: Request, params: dict[str, str]) -> None:
    """A Plivo request, signed by Plivo (and configured to be checked at all), or 403."""
    settings = state.settings
    for name, value in (("PLIVO_AUTH_TOKEN", settings.plivo_auth_token), ("PLIVO_AUTH_ID", settings.plivo_auth_id)):
        if not value:
            raise TelephonySignatureInvalid(f"Plivo webhooks are refused: {name} is not configured")
    url = base_url(settings, request) + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    verify_request(settings.plivo_auth_token, state.plivo_nonces, request.method, url, params,  # type: ignore[arg-type]
                   request.headers, time.time())  # the token was checked above


def plivo_xml(response: plivoxml.ResponseElement) -> Response:
    return Response(response.to_string(), media_type="application/xml")


def expiring(url: str, after_s: float) -> str:
    return f"{url}{'&' if '?' in url else '?'}{EXPIRY_PARAM}={int(time.time() + after_s + REDIRECT_GRACE_S)}"


def connect_stream(state: AppState, request: Request, session_id: str) -> Response:
    """``<Stream>`` to the session's bot, then (once the stream ends) a redirect that asks
    ``stream_ended`` what to do next."""
    base = base_url(state.settings, request)
    agent = state.service.get(session_id).agent
    response = plivoxml.ResponseElement()
    response.add(plivoxml.StreamElement(
        ws_base(base) + PLIVO_STREAM_PATH, bidirectional=True, keepCallAlive=True, contentType=CONTENT_TYPE,
        extraHeaders=extra_headers_for(state.tokens.mint(session_id))))
    ended = expiring(f"{base}/v1/telephony/plivo/{agent}/ended?session={session_id}", state.settings.max_session_s)
    response.add(plivoxml.RedirectElement(ended, method="POST"))
    return plivo_xml(response)


def hold(settings: Settings, request: Request, agent: str, *, say: bool, query: str) -> Response:
    tel = settings.telephony
    response = plivoxml.ResponseElement()
    if say:
        response.add(plivoxml.SpeakElement(tel.busy_message))
    response.add(plivoxml.WaitElement(length=tel.hold_check_s))
    again = expiring(f"{base_url(settings, request)}/v1/telephony/plivo/{agent}?{query}", tel.hold_check_s)
    response.add(plivoxml.RedirectElement(again, method="POST"))
    return plivo_xml(response)


def goodbye(message: str | None) -> Response:
    """Say `message` (if any), then hang up."""
    response = plivoxml.ResponseElement()
    if message is not None:
        response.add(plivoxml.SpeakElement(message))
    response.add(plivoxml.HangupElement())
    return plivo_xml(response)


async def form_params(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.post("/v1/telephony/plivo/{agent}")
async def plivo_voice(agent: str, request: Request, state: State) -> Response:
    """Plivo's answer URL (form-encoded, signed): answer a call with a media stream to a bot."""
    params = await form_params(request)
    verify(state, request, params)
    call_uuid = params.get("CallUUID")
    if not call_uuid:
        raise InvalidRequest("CallUUID", call_uuid, "required: Plivo sends it with every call")
    attempt = request.query_params.get("attempt", "0")
    if not attempt.isdigit():
        raise InvalidRequest("attempt", attempt, "must be a whole number")
    answer = await admit_call(
        state, carrier="plivo", agent=agent, call_id=call_uuid,
        call={k: params[k] for k in CALL_FIELDS if k in params},
        caller=params.get("From"), attempt=int(attempt), held=request.query_params.get("session"),
        region=request.query_params.get("region") or None)
    if isinstance(answer, ConnectStream):
        return connect_stream(state, request, answer.session_id)
    if isinstance(answer, Hold):
        return hold(state.settings, request, agent, say=answer.say, query=answer.query)
    return goodbye(answer.message)


@router.post("/v1/telephony/plivo/{agent}/ended")
async def stream_ended(agent: str, request: Request, state: State) -> Response:
    """The ``<Redirect>`` after ``<Stream keepCallAlive>``: the call's stream ended with the call
    still up. A caller whose bot failed hears ``lost_message`` before the call ends (never
    silence); any other end hangs up."""
    params = await form_params(request)
    verify(state, request, params)
    return goodbye(await after_stream(state, request.query_params.get("session", "")))


@router.websocket(PLIVO_STREAM_PATH)
async def plivo_stream(websocket: WebSocket, state: State) -> None:
    """Plivo's audio stream for a call answered above."""
    await websocket.accept()
    check = PlivoStreamCheck()
    try:
        _connected, start = await read_start(websocket, check)  # Plivo sends start first
        session_id = state.tokens.consume(check.stream_token())
        record = state.service.table.get(session_id)
        if record is not None and record.transport != "plivo":
            raise StreamTokenInvalid(f"stream token is for a {record.transport} session, not a Plivo call")
    except StreamRejected as exc:
        await reject(websocket, exc)
        return
    call_uuid = check.call_id or ""

    async def hang_up() -> None:
        ended = state.service.table.get(session_id)
        if ended is not None and ended.expected_end and ended.expected_end[0] == EndReason.TRANSFERRED:
            return  # the call goes on with the number it was handed to
        await hang_up_call(state.settings, call_uuid)

    await run_stream(state, websocket, session_id, check, "plivo", [without_token(start)], hang_up=hang_up)


async def hang_up_call(settings: Settings, call_uuid: str) -> None:
    """The bot ended the call: end it at Plivo too (Plivo answers 204; 404: already over)."""
    auth_id, auth_token = settings.plivo_auth_id, settings.plivo_auth_token
    if not (auth_id and auth_token and call_uuid):
        return
    base = (settings.telephony.plivo_api_base or PLIVO_API_BASE).rstrip("/")
    url = f"{base}/v1/Account/{quote(auth_id, safe='')}/Call/{quote(call_uuid, safe='')}/"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.delete(url, auth=(auth_id, auth_token))
    except httpx.HTTPError as exc:  # the call ends anyway once its stream is closed
        log.warning("call %s: Plivo REST hang-up failed: %s", call_uuid, exc)
        return
    if response.status_code in (204, 404):
        log.info("call %s: hung up through Plivo's REST API (%d)", call_uuid, response.status_code)
    else:
        log.warning("call %s: Plivo REST hang-up answered %d: %s", call_uuid, response.status_code,
                    response.text[:200])
