"""Phone calls over Telnyx: a TeXML application's voice webhook, Telnyx Media Streaming, and the
REST hang-up.

A call: Telnyx POSTs the TeXML application's voice URL ``/v1/telephony/telnyx/{agent}`` (form
fields as TwiML's: CallSid, From, To...; signed with ``telnyx-signature-ed25519`` over
``{telnyx-timestamp}|{body}``, see ``transports/telnyx_auth.py``). The call is admitted like any
session (``control/calls.py``) and answered in TeXML:

- connect: ``<Connect><Stream url=wss://.../v1/telephony/telnyx/stream bidirectionalMode="rtp">``
  with the session id and a single-use token as ``<Parameter>``s (they arrive in the stream's
  start message as ``start.custom_parameters``), then a ``<Redirect>`` to
  ``/v1/telephony/telnyx/{agent}/ended?session=...``: Telnyx's ``<Connect>`` has no ``action``;
  it runs the next verb once the stream has stopped, so the Redirect is how Telnyx asks what to
  do when a stream ends with the call still up (the caller hears ``lost_message`` if its bot failed);
- hold: ``<Say>busy_message</Say><Pause/><Redirect>`` back here; goodbye: ``<Say/><Hangup/>``.

When the bot ends the call, voxfleet hangs it up through Telnyx's Call Control API
(``POST /v2/calls/{call_control_id}/actions/hangup``, Bearer ``TELNYX_API_KEY``; a TeXML call's
CallSid is its call_control_id), as Pipecat's Telnyx serializer does. Without
``TELNYX_PUBLIC_KEY`` (signatures) or ``TELNYX_API_KEY`` (which Pipecat's serializer requires:
without it the bot could not take the call) every Telnyx webhook is refused with 403 and the reason.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, quote

import httpx
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from voxfleet.config import Settings
from voxfleet.control.calls import ConnectStream, Hold, admit_call, after_stream
from voxfleet.control.state import AppState, State
from voxfleet.control.streams import read_start, reject
from voxfleet.end_reasons import EndReason
from voxfleet.control.telephony import base_url, run_stream, ws_base
from voxfleet.exceptions import InvalidRequest, StreamRejected, StreamTokenInvalid
from voxfleet.exceptions import TelephonySignatureInvalid
from voxfleet.transports.telnyx_auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, TelnyxSignatures
from voxfleet.transports.telnyx_media import TelnyxStreamCheck, connected_frame, without_token

log = logging.getLogger(__name__)

CARRIER = "telnyx"
TELNYX_STREAM_PATH = "/v1/telephony/telnyx/stream"
DEFAULT_API_BASE = "https://api.telnyx.com/v2"
CALL_FIELDS = ("CallSid", "AccountSid", "From", "To", "Direction", "ConnectionId")  # -> the bot's body["call"]
HANG_UP_TIMEOUT_S = 10.0

router = APIRouter(tags=["telephony"])


async def signed_form(state: AppState, request: Request) -> dict[str, str]:
    """The webhook's form fields, once its signature is verified (403 naming why not)."""
    settings = state.settings
    public_key = settings.telnyx_public_key
    if not public_key:
        raise TelephonySignatureInvalid("Telnyx webhooks are refused: TELNYX_PUBLIC_KEY is not configured")
    if not settings.telnyx_api_key:
        raise TelephonySignatureInvalid("Telnyx webhooks are refused: TELNYX_API_KEY is not configured")
    body = await request.body()
    signatures = TelnyxSignatures(public_key, tolerance_s=settings.telephony.telnyx_signature_tolerance_s,
                                  seen=state.telnyx_seen)
    signatures.verify(request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER), body, time.time())
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def texml(response: ET.Element) -> Response:
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode"),
                    media_type="application/xml")


def say(response: ET.Element, text: str) -> None:
    ET.SubElement(response, "Say").text = text


def redirect(response: ET.Element, url: str) -> None:
    ET.SubElement(response, "Redirect", method="POST").text = url


def connect_stream(state: AppState, request: Request, session_id: str,
                   parameters: dict[str, str] | None = None) -> Response:
    """``<Connect><Stream>`` to the session's bot (with `parameters` as more ``<Parameter>``s),
    then the ``<Redirect>`` Telnyx follows once the stream has stopped (``stream_ended``)."""
    base = base_url(state.settings, request)
    agent = state.service.get(session_id).agent
    response = ET.Element("Response")
    connect = ET.SubElement(response, "Connect")
    # rtp: Telnyx plays the bot's media payloads as PCMU (its default mode, mp3, would drop them)
    stream = ET.SubElement(connect, "Stream", url=ws_base(base) + TELNYX_STREAM_PATH, track="inbound_track",
                           codec="PCMU", bidirectionalMode="rtp", bidirectionalCodec="PCMU")
    ET.SubElement(stream, "Parameter", name="session", value=session_id)
    ET.SubElement(stream, "Parameter", name="token", value=state.tokens.mint(session_id))
    for name, value in (parameters or {}).items():
        ET.SubElement(stream, "Parameter", name=name, value=value)
    redirect(response, f"{base}/v1/telephony/telnyx/{quote(agent)}/ended?session={session_id}")
    return texml(response)


def hold(settings: Settings, request: Request, agent: str, *, say_busy: bool, query: str) -> Response:
    tel = settings.telephony
    response = ET.Element("Response")
    if say_busy:
        say(response, tel.busy_message)
    ET.SubElement(response, "Pause", length=str(tel.hold_check_s))
    redirect(response, f"{base_url(settings, request)}/v1/telephony/telnyx/{quote(agent)}?{query}")
    return texml(response)


def goodbye(message: str | None) -> Response:
    response = ET.Element("Response")
    if message is not None:
        say(response, message)
    ET.SubElement(response, "Hangup")
    return texml(response)


@router.post("/v1/telephony/telnyx/{agent}")
async def telnyx_voice(agent: str, request: Request, state: State) -> Response:
    """A TeXML application's voice webhook (form-encoded, Ed25519-signed): answer a call with a
    media stream to a bot, or hold, or goodbye."""
    params = await signed_form(state, request)
    call_sid = params.get("CallSid")
    if not call_sid:
        raise InvalidRequest("CallSid", call_sid, "required: Telnyx sends it with every TeXML request")
    attempt = request.query_params.get("attempt", "0")
    if not attempt.isdigit():
        raise InvalidRequest("attempt", attempt, "must be a whole number")
    answer = await admit_call(
        state, carrier=CARRIER, agent=agent, call_id=call_sid,
        call={k: params[k] for k in CALL_FIELDS if k in params}, caller=params.get("From"), attempt=int(attempt),
        held=request.query_params.get("session"), region=request.query_params.get("region") or None)
    if isinstance(answer, ConnectStream):
        return connect_stream(state, request, answer.session_id)
    if isinstance(answer, Hold):
        return hold(state.settings, request, agent, say_busy=answer.say, query=answer.query)
    return goodbye(answer.message)


@router.post("/v1/telephony/telnyx/{agent}/ended")
async def stream_ended(agent: str, request: Request, state: State) -> Response:
    """The ``<Redirect>`` after ``<Connect>``: the call's media stream stopped with the call still
    up. A caller whose bot failed hears ``lost_message`` before the call ends (never silence)."""
    await signed_form(state, request)
    return goodbye(await after_stream(state, request.query_params.get("session", "")))


@router.websocket(TELNYX_STREAM_PATH)
async def telnyx_stream(websocket: WebSocket, state: State) -> None:
    """Telnyx's media stream for a call answered above."""
    await websocket.accept()
    check = TelnyxStreamCheck()
    try:
        connected, start = await read_start(websocket, check, connected_frame())
        params = check.custom_parameters
        session_id = state.tokens.consume(params.get("token"))
        if params.get("session") != session_id:
            raise StreamTokenInvalid("stream token is for another session")
    except StreamRejected as exc:
        await reject(websocket, exc)
        return
    call_control_id = call_of(state, session_id) or check.call_control_id
    await run_stream(state, websocket, session_id, check, CARRIER, [connected, without_token(start)],
                     hang_up=lambda: hang_up_unless_transferred(state, session_id, call_control_id))


def call_of(state: AppState, session_id: str) -> str | None:
    """The CallSid of the signed webhook that started `session_id` (a TeXML call's CallSid is its
    call_control_id), rather than what the stream's start says."""
    prefix = f"{CARRIER}:"
    return next((key[len(prefix):] for key, sid in reversed(state.call_sessions.items())
                 if sid == session_id and key.startswith(prefix)), None)


async def hang_up_unless_transferred(state: AppState, session_id: str, call_control_id: str | None) -> None:
    """The bot's end of a call: hung up at Telnyx, unless the call was handed to a number (its
    bot stops then too, but the call goes on)."""
    record = state.service.table.get(session_id)
    if record is not None and ("transfer" in record.call
                               or (record.expected_end and record.expected_end[0] == EndReason.TRANSFERRED)):
        return
    await hang_up_call(state.settings, session_id, call_control_id)


async def hang_up_call(settings: Settings, session_id: str, call_control_id: str | None) -> None:
    """The bot ended the call: end it at Telnyx too (Call Control's hangup command)."""
    if not (settings.telnyx_api_key and call_control_id):
        return
    base = (settings.telephony.telnyx_api_base or DEFAULT_API_BASE).rstrip("/")
    url = f"{base}/calls/{quote(call_control_id, safe=':')}/actions/hangup"
    try:
        async with httpx.AsyncClient(timeout=HANG_UP_TIMEOUT_S) as http:
            response = await http.post(url, json={}, headers={"Authorization": f"Bearer {settings.telnyx_api_key}"})
    except httpx.HTTPError as exc:  # the call ends anyway when its stream closes
        log.warning("session %s: call %s: Telnyx REST hang-up failed: %s", session_id, call_control_id, exc)
        return
    if response.status_code == 422 and "90018" in response.text:  # Telnyx: "Call has already ended"
        log.info("session %s: call %s had already ended at Telnyx", session_id, call_control_id)
    elif response.is_error:
        log.warning("session %s: call %s: Telnyx REST hang-up answered %d: %s", session_id, call_control_id,
                    response.status_code, response.text[:200])
    else:
        log.info("session %s: call %s hung up through Telnyx's REST API", session_id, call_control_id)
