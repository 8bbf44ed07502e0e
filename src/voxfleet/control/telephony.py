"""Phone calls over Twilio Media Streams, and generic media WebSocket sessions.

A call: Twilio POSTs the voice webhook ``/v1/telephony/twilio/{agent}`` (signed with
X-Twilio-Signature over ``public_url`` + path); voxfleet admits a session like any other (warm
bot, cold start, queue) and answers TwiML: ``<Connect><Stream>`` to ``/v1/telephony/twilio/stream``
with the session id and a single-use token as ``<Parameter>``s; when no agent is free, the caller
hears ``busy_message`` and holds (``<Pause>`` + ``<Redirect>`` back here, bounded by the queue's
wait) or is told goodbye, as configured; never a dead line. Twilio then opens the stream; its
``start`` carries the token; the stream is relayed to the session's bot (``control/streams.py``).

Generic: ``POST /start {"transport": "websocket"}`` returns ``wsUrl`` and a token; a Pipecat
WebSocket client (``@pipecat-ai/websocket-transport``: ``?token=``) connects to ``/v1/ws``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from voxfleet.config import Settings
from voxfleet.control.calls import ConnectStream, Hold, admit_call, after_stream
from voxfleet.end_reasons import EndReason, failure_text
from voxfleet.control.state import AppState, State
from voxfleet.control.twilio_rest import hang_up_call
from voxfleet.control.streams import (
    FrameCheck, GenericFrameCheck, RelayEnd, close_caller, read_start, reject, relay, rtvi_frame, without_token,
)
from voxfleet.exceptions import (
    InvalidRequest,
    StreamRejected,
    StreamTokenInvalid,
    TelephonySignatureInvalid,
    VoxfleetError,
)
from voxfleet.runtime.rtvi import fatal_error
from voxfleet.runtime.streams import BOT_FAILED
from voxfleet.transports.stream_tokens import StreamTokens
from voxfleet.transports.twilio_media import TwilioStreamCheck

log = logging.getLogger(__name__)

TWILIO_STREAM_PATH = "/v1/telephony/twilio/stream"
WS_PATH = "/v1/ws"
TWILIO_CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'  # its documented first message


def stream_tokens(settings: Settings) -> StreamTokens:
    secret = settings.telephony.stream_token_secret
    return StreamTokens(secret.encode() if secret else secrets.token_bytes(32), settings.telephony.stream_token_ttl_s)


def base_url(settings: Settings, request: Request | WebSocket) -> str:
    if settings.public_url:
        return settings.public_url
    return str(request.base_url).rstrip("/")


def ws_base(http_base: str) -> str:
    return "wss" + http_base[5:] if http_base.startswith("https") else "ws" + http_base[4:]


def twiml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type="application/xml")


router = APIRouter(tags=["telephony"])


def verify_signature(settings: Settings, request: Request, params: dict[str, str]) -> None:
    if not settings.twilio_auth_token:
        raise TelephonySignatureInvalid("Twilio webhooks are refused: TWILIO_AUTH_TOKEN is not configured")
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        raise TelephonySignatureInvalid("X-Twilio-Signature header missing")
    url = base_url(settings, request) + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not RequestValidator(settings.twilio_auth_token).validate(url, params, signature):
        raise TelephonySignatureInvalid(f"X-Twilio-Signature does not match this request to {url} "
                                        "(wrong TWILIO_AUTH_TOKEN, or public_url is not the URL Twilio calls)")


def connect_stream(state: AppState, request: Request, session_id: str,
                   parameters: dict[str, str] | None = None) -> Response:
    """``<Connect><Stream>`` to the session's bot (with `parameters`: the stream's
    ``customParameters``); when the stream ends Twilio asks the ``action`` URL (``stream_ended``)
    what to do next."""
    response = VoiceResponse()
    agent = state.service.get(session_id).agent
    connect = Connect(action=f"{base_url(state.settings, request)}/v1/telephony/twilio/{agent}/ended"
                             f"?session={session_id}", method="POST")
    stream = connect.stream(url=ws_base(base_url(state.settings, request)) + TWILIO_STREAM_PATH)
    stream.parameter(name="session", value=session_id)
    stream.parameter(name="token", value=state.tokens.mint(session_id))
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return twiml(response)


def hold(settings: Settings, request: Request, agent: str, *, say: bool, query: str) -> Response:
    tel = settings.telephony
    response = VoiceResponse()
    if say:
        response.say(tel.busy_message)
    response.pause(length=tel.hold_check_s)
    response.redirect(f"{base_url(settings, request)}/v1/telephony/twilio/{agent}?{query}", method="POST")
    return twiml(response)


def goodbye(message: str) -> Response:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return twiml(response)


@router.post("/v1/telephony/twilio/{agent}")
async def twilio_voice(agent: str, request: Request, state: State) -> Response:
    """Twilio's voice webhook (form-encoded, signed): answer a call with a media stream to a bot."""
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(state.settings, request, params)
    call_sid = params.get("CallSid")
    if not call_sid:
        raise InvalidRequest("CallSid", call_sid, "required: Twilio sends it with every call")
    attempt = request.query_params.get("attempt", "0")
    if not attempt.isdigit():
        raise InvalidRequest("attempt", attempt, "must be a whole number")
    answer = await admit_call(
        state, carrier="twilio", agent=agent, call_id=call_sid,
        call={k: params[k] for k in ("CallSid", "AccountSid", "From", "To", "Direction") if k in params},
        caller=params.get("From"), attempt=int(attempt), held=request.query_params.get("session"),
        # a number's webhook URL may pick the region its calls run in: ...?region=eu
        region=request.query_params.get("region") or None)
    if isinstance(answer, ConnectStream):
        return connect_stream(state, request, answer.session_id)
    if isinstance(answer, Hold):
        return hold(state.settings, request, agent, say=answer.say, query=answer.query)
    return goodbye(answer.message)


@router.post("/v1/telephony/twilio/{agent}/ended")
async def stream_ended(agent: str, request: Request, state: State) -> Response:
    """``<Connect action>``: the call's media stream ended. A caller whose bot failed hears
    ``lost_message`` before the call ends (never silence); any other end hangs up."""
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(state.settings, request, params)
    message = await after_stream(state, request.query_params.get("session", ""))
    return goodbye(message) if message is not None else hang_up_twiml()


def hang_up_twiml() -> Response:
    response = VoiceResponse()
    response.hangup()
    return twiml(response)


@router.websocket(TWILIO_STREAM_PATH)
async def twilio_stream(websocket: WebSocket, state: State) -> None:
    """Twilio's media stream for a call answered above."""
    await websocket.accept()
    check = TwilioStreamCheck()
    try:
        connected, start = await read_start(websocket, check, TWILIO_CONNECTED)
        params = check.started.get("customParameters", {})
        session_id = state.tokens.consume(params.get("token"))
        if params.get("session") != session_id:
            raise StreamTokenInvalid("stream token is for another session")
    except StreamRejected as exc:
        await reject(websocket, exc)
        return
    call_sid = check.started["callSid"]
    await run_stream(state, websocket, session_id, check, "twilio", [connected, without_token(start)],
                     hang_up=lambda: hang_up_call(state.settings, call_sid))


@router.websocket(WS_PATH)
@router.websocket(WS_PATH + "/{path_token}")
async def generic_stream(websocket: WebSocket, state: State, path_token: str | None = None) -> None:
    """A generic Pipecat WebSocket client (protobuf frames) for a session started with
    {"transport": "websocket"}; token from the path, ?token= or Authorization: Bearer."""
    token = path_token or websocket.query_params.get("token")
    bearer = websocket.headers.get("authorization", "")
    if not token and bearer.lower().startswith("bearer "):
        token = bearer[7:].strip()
    try:
        session_id = state.tokens.consume(token)
    except StreamRejected as exc:
        await reject(websocket, exc)
        return
    await websocket.accept()
    await run_stream(state, websocket, session_id, GenericFrameCheck(), "websocket", [])


async def run_stream(state: AppState, websocket: WebSocket, session_id: str, check: FrameCheck, transport: str,
                     first_frames: list[str], hang_up: Callable[[], Awaitable[None]] | None = None) -> None:
    """Relay an accepted media stream to the session's bot until either side ends it.
    `hang_up`: ends the call at its carrier when the bot ended it (not when the bot failed:
    the carrier then asks what to do next, and the caller hears lost_message)."""
    service = state.service
    request: dict[str, Any] = {
        "transport": transport, "path": websocket.url.path,
        "headers": [(k, v) for k, v in websocket.headers.items() if k.lower() != "authorization"],
        "client": list(websocket.client) if websocket.client else None,
        "scheme": websocket.url.scheme,
    }
    try:
        record = service.get(session_id)
        stream = await service.open_stream(session_id, request)
    except VoxfleetError as exc:
        failed = state.service.table.get(session_id)
        if failed is not None and failed.end_reason is not None and EndReason(failed.end_reason).failed:
            await tell_failed(websocket, transport, failed.end_reason)  # its bot could not start: as mid-call
        else:
            await reject(websocket, exc if isinstance(exc, StreamRejected) else StreamRejected(str(exc)))
        return
    if check.phone:
        record.stream_started_at = time.time()
        record.mark("stream_start", record.stream_started_at)
    for frame in first_frames:
        stream.send(frame)

    def first_audio(at: float) -> None:
        record.first_audio_at = at
        record.mark("first_audio", at)

    end: RelayEnd = await relay(websocket, stream, check, idle_timeout=state.settings.idle_timeout_s,
                                on_first_audio=first_audio if check.phone else None, rtvi=not check.phone)
    log.info("session %s: media stream ended: %s (%s)", session_id, end.reason, end.detail)
    if end.reason in ("protocol_error", "idle_timeout"):
        await service.hang_up(session_id, end.reason)
    elif end.by_bot and not end.failed and hang_up is not None:  # a failed bot's caller is told first
        await hang_up()


async def tell_failed(websocket: WebSocket, transport: str, reason: str) -> None:
    """A session that failed before its stream could reach the bot (start_failed, ...): told as
    a caller whose bot fails mid-call is: a Pipecat client gets the fatal RTVI error, and the
    socket closes 1011 with the reason only (a phone caller then hears lost_message: stream_ended)."""
    log.warning("media stream for a failed session (%s): the caller is told", reason)
    if transport == "websocket":
        try:
            await websocket.send_bytes(rtvi_frame(fatal_error(failure_text(reason)), binary=True))  # type: ignore[arg-type]
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
    await close_caller(websocket, BOT_FAILED, failure_text(reason))
