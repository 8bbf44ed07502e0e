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

import asyncio
import logging
import secrets
import time
from urllib.parse import quote
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from voxfleet.config import Settings
from voxfleet.end_reasons import EndReason
from voxfleet.control.state import AppState, State
from voxfleet.control.streams import GenericFrameCheck, RelayEnd, receive_frame, reject, relay, without_token
from voxfleet.exceptions import (
    AtCapacity,
    InvalidRequest,
    NotReady,
    SessionNotFound,
    StreamProtocolError,
    StreamRejected,
    StreamTokenInvalid,
    TelephonySignatureInvalid,
    Unplaceable,
    VoxfleetError,
)
from voxfleet.scheduler.sessions import ENDED, QUEUED
from voxfleet.transports.stream_tokens import StreamTokens
from voxfleet.transports.twilio_media import TwilioStreamCheck

log = logging.getLogger(__name__)

TWILIO_STREAM_PATH = "/v1/telephony/twilio/stream"
WS_PATH = "/v1/ws"
HANDSHAKE_TIMEOUT_S = 10.0
ENDED_WAIT_S = 3.0  # how long Twilio's stream-ended request waits for the session's end
MAX_CALLS_REMEMBERED = 10_000  # CallSid -> session, so a replayed webhook starts no second session


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


def max_hold_attempts(settings: Settings) -> int:
    """How many times a held caller is redirected back before being told goodbye."""
    return max(1, int(settings.queue_wait_s // settings.telephony.hold_check_s))


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


def connect_stream(state: AppState, request: Request, session_id: str) -> Response:
    """``<Connect><Stream>`` to the session's bot; when the stream ends Twilio asks the
    ``action`` URL (``stream_ended``) what to do next."""
    response = VoiceResponse()
    agent = state.service.get(session_id).agent
    connect = Connect(action=f"{base_url(state.settings, request)}/v1/telephony/twilio/{agent}/ended"
                             f"?session={session_id}", method="POST")
    stream = connect.stream(url=ws_base(base_url(state.settings, request)) + TWILIO_STREAM_PATH)
    stream.parameter(name="session", value=session_id)
    stream.parameter(name="token", value=state.tokens.mint(session_id))
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
    settings, service, tel = state.settings, state.service, state.settings.telephony
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(settings, request, params)
    call_sid = params.get("CallSid")
    if not call_sid:
        raise InvalidRequest("CallSid", call_sid, "required: Twilio sends it with every call")
    held = request.query_params.get("session")
    if held:
        return await check_held(state, request, agent, held)
    attempt = request.query_params.get("attempt", "0")
    if not attempt.isdigit():
        raise InvalidRequest("attempt", attempt, "must be a whole number")
    attempt = int(attempt)
    # a number's webhook URL may pick the region its calls run in: ...?region=eu
    region = request.query_params.get("region") or None
    keep = f"&region={quote(region)}" if region else ""
    known = state.call_sessions.get(call_sid)
    if known is not None:  # a replayed (or retried) webhook of a call that has its session
        return await answer_again(state, request, agent, call_sid, known)
    call = {k: params[k] for k in ("CallSid", "AccountSid", "From", "To", "Direction") if k in params}
    # one calling number is one client (unbounded with --dev)
    client = f"phone:{params.get('From') or 'unknown'}" if await state.auth.enabled() else None
    try:
        if client is not None:
            service.check_rate(client)
        record = await service.start_session(agent, {"call": call}, transport="twilio", region=region,
                                             client=client)
    except Unplaceable as exc:  # no node could ever take it: a misconfigured number, not busy
        log.error("call %s for %s: %s", call_sid, agent, exc)
        return goodbye(tel.goodbye_message)
    except (AtCapacity, NotReady) as exc:
        log.warning("call %s for %s: %s", call_sid, agent, exc)
        if tel.when_busy == "hold" and attempt < max_hold_attempts(settings):
            return hold(settings, request, agent, say=attempt == 0, query=f"attempt={attempt + 1}{keep}")
        return goodbye(tel.goodbye_message if attempt else f"{tel.busy_message.split('.')[0]}. {tel.goodbye_message}")
    state.call_sessions[call_sid] = record.session_id
    while len(state.call_sessions) > MAX_CALLS_REMEMBERED:
        state.call_sessions.popitem(last=False)
    if record.state != QUEUED:
        return connect_stream(state, request, record.session_id)
    if tel.when_busy == "hangup":
        await service.hang_up(record.session_id, EndReason.BUSY)
        return goodbye(f"{tel.busy_message.split('.')[0]}. {tel.goodbye_message}")
    return hold(settings, request, agent, say=True, query=f"session={record.session_id}{keep}")


async def answer_again(state: AppState, request: Request, agent: str, call_sid: str, session_id: str) -> Response:
    """The same CallSid again (a replayed or retried webhook): never a second session. A session
    still waiting for its stream is offered it again (one stream per session: the first to
    connect has it); a held one goes on holding; for one that is streaming or over, goodbye
    (which reaches only whoever replayed the webhook, not the live call)."""
    try:
        record = state.service.get(session_id)
    except SessionNotFound:
        return goodbye(state.settings.telephony.goodbye_message)
    log.warning("call %s: webhook again for session %s (%s): no second session", call_sid, session_id, record.state)
    if record.state == QUEUED:
        return hold(state.settings, request, agent, say=False, query=f"session={session_id}")
    if record.state != ENDED and "stream_connected" not in record.timings_ms:
        return connect_stream(state, request, session_id)
    return goodbye(state.settings.telephony.goodbye_message)


async def check_held(state: AppState, request: Request, agent: str, session_id: str) -> Response:
    tel = state.settings.telephony
    try:
        record = state.service.get(session_id)
    except SessionNotFound:
        return goodbye(tel.goodbye_message)
    if record.state == QUEUED:
        return hold(state.settings, request, agent, say=False, query=request.url.query)
    if record.state == ENDED:
        return goodbye(tel.goodbye_message)
    return connect_stream(state, request, session_id)


@router.post("/v1/telephony/twilio/{agent}/ended")
async def stream_ended(agent: str, request: Request, state: State) -> Response:
    """``<Connect action>``: the call's media stream ended. A caller whose bot failed hears
    ``lost_message`` before the call ends (never silence); any other end hangs up."""
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(state.settings, request, params)
    session_id = request.query_params.get("session", "")
    try:
        record = state.service.get(session_id)
    except SessionNotFound:
        return hang_up_twiml()
    deadline = time.monotonic() + ENDED_WAIT_S  # the stream closes a moment before the record ends
    while record.state != ENDED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if record.end_reason is not None and EndReason(record.end_reason).failed:
        log.warning("call %s (session %s): bot failed (%s); the caller is told", params.get("CallSid"),
                    session_id, record.end_reason)
        return goodbye(state.settings.telephony.lost_message)
    return hang_up_twiml()


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
        connected, start = await twilio_handshake(websocket, check)
        params = check.started.get("customParameters", {})
        session_id = state.tokens.consume(params.get("token"))
        if params.get("session") != session_id:
            raise StreamTokenInvalid("stream token is for another session")
    except StreamRejected as exc:
        await reject(websocket, exc)
        return
    await run_stream(state, websocket, session_id, check, "twilio", [connected, without_token(start)],
                     call_sid=check.started["callSid"])


async def twilio_handshake(websocket: WebSocket, check: TwilioStreamCheck) -> tuple[str, str]:
    """The stream's ``connected`` and ``start`` messages. Pipecat's parser reads two messages,
    so a stream that opens with ``start`` gets the documented ``connected`` put before it."""
    frames: list[str] = []
    while check.started is None:
        try:
            frame = await receive_frame(websocket, HANDSHAKE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise StreamProtocolError("start", None, f"no start event within {HANDSHAKE_TIMEOUT_S:.0f}s") from None
        if frame is None:
            raise StreamProtocolError("start", None, "the socket closed before the start event")
        check.check(frame)
        frames.append(frame)  # type: ignore[arg-type]  # check() refuses binary frames
    connected = frames[0] if len(frames) == 2 else '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
    return connected, frames[-1]


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


async def run_stream(state: AppState, websocket: WebSocket, session_id: str,
                     check: TwilioStreamCheck | GenericFrameCheck, transport: str, first_frames: list[str],
                     call_sid: str | None = None) -> None:
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
        await reject(websocket, exc if isinstance(exc, StreamRejected) else StreamRejected(str(exc)))
        return
    if transport == "twilio":
        record.stream_started_at = time.time()
        record.mark("stream_start", record.stream_started_at)
    for frame in first_frames:
        stream.send(frame)

    def first_audio(at: float) -> None:
        record.first_audio_at = at
        record.mark("first_audio", at)

    end: RelayEnd = await relay(websocket, stream, check, idle_timeout=state.settings.idle_timeout_s,
                                on_first_audio=first_audio if transport == "twilio" else None,
                                rtvi=transport == "websocket")
    log.info("session %s: media stream ended: %s (%s)", session_id, end.reason, end.detail)
    if end.reason in ("protocol_error", "idle_timeout"):
        await service.hang_up(session_id, end.reason)
    elif end.by_bot and not end.failed and call_sid:  # a failed bot's caller is told first (stream_ended)
        await hang_up_call(state.settings, call_sid)


async def hang_up_call(settings: Settings, call_sid: str) -> None:
    """The bot ended the call: end it at Twilio too (when credentials are configured)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return
    try:
        await asyncio.to_thread(_complete_call, settings, call_sid)
        log.info("call %s: hung up through Twilio's REST API", call_sid)
    except Exception as exc:  # noqa: BLE001 - the call ends anyway when its stream closes
        log.warning("call %s: REST hang-up failed: %s", call_sid, exc)


def _complete_call(settings: Settings, call_sid: str) -> None:
    from twilio.rest import Client

    client = Client(settings.twilio_account_sid, settings.twilio_auth_token)
    if settings.telephony.twilio_api_base:
        client.api.base_url = settings.telephony.twilio_api_base.rstrip("/")
    client.calls(call_sid).update(status="completed")
