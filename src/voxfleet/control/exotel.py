"""Phone calls through Exotel's Voicebot applet (App Bazaar), the way Exotel documents it.

Exotel has no call markup to answer with: a call flow built in Exotel's App Bazaar runs applets,
and the Voicebot applet opens a bidirectional WebSocket to a URL, either a fixed ``wss://`` URL
or an ``https://`` endpoint that Exotel asks, per call, for the URL (``{"url": "wss://..."}``).
voxfleet is that endpoint, so every call is admitted like any session (warm bot, cold start,
queue) before its stream opens, and the stream URL carries a single-use token. Once the stream
ends (the caller hung up, the bot ended the call, the bot failed, or there was no bot to
connect) Exotel runs the flow's next applets, which ask voxfleet what the caller hears:

    Voicebot   GET|POST /v1/telephony/exotel/{agent}        -> {"url": "wss://.../stream?token=..."}
    Passthru   GET      /v1/telephony/exotel/{agent}/ended  -> 302: something to say, 200: nothing
    Greeting   GET|HEAD /v1/telephony/exotel/{agent}/say    -> text/plain, read out by Exotel's TTS
    Passthru   GET      /v1/telephony/exotel/{agent}/hold   -> 200: back to the Voicebot applet
                                                               (after hold_check_s), 302: hang up

so a caller whose bot failed hears ``lost_message``, one who finds no agent free hears
``busy_message`` and holds (back to the Voicebot applet, which asks again) or hears the goodbye;
never a dead line. When the bot ends the call voxfleet closes the stream, and the flow ends the
call (there is no REST hang-up to make: Exotel's v1 API has none for a flow's call, and Pipecat's
Exotel serializer makes none). Every route and the stream handshake need Exotel's Basic-auth
credentials (``transports/exotel_auth.py``); docs/telephony.md shows the flow to build.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.requests import HTTPConnection

from voxfleet.config import Settings
from voxfleet.control.calls import ConnectStream, Goodbye, Hold, admit_call, after_stream
from voxfleet.control.state import AppState, State
from voxfleet.control.streams import read_start, reject
from voxfleet.control.telephony import base_url, run_stream, ws_base
from voxfleet.exceptions import (
    InvalidRequest,
    StreamCredentialsInvalid,
    StreamRejected,
    StreamTokenInvalid,
    TelephonySignatureInvalid,
)
from voxfleet.transports.exotel_auth import ExotelCredentials, authorization_problem
from voxfleet.transports.exotel_media import TOKEN_PARAMETER, ExotelStreamCheck, without_token

log = logging.getLogger(__name__)

EXOTEL_PREFIX = "/v1/telephony/exotel"
EXOTEL_STREAM_PATH = f"{EXOTEL_PREFIX}/stream"
UNSERVED = "unserved"  # the stream URL of a call with no bot to connect: closed at once, the flow goes on
MAX_CALLS_REMEMBERED = 10_000
CALL_FIELDS = ("CallSid", "CallFrom", "CallTo", "From", "To", "Direction", "CustomField")

router = APIRouter(tags=["telephony"])


@dataclass(frozen=True)
class NextStep:
    """What a call's flow does once its Voicebot applet is done: ``message`` for the Greeting
    applet to say (None: nothing), then back to the Voicebot applet (``again``: holding, with
    ``query`` for admit_call) or hang up."""

    message: str | None
    again: bool = False
    query: str = ""


class ExotelCalls:
    """The next step of each call between its flow's applets, by CallSid; bounded."""

    def __init__(self, limit: int = MAX_CALLS_REMEMBERED) -> None:
        self.steps: OrderedDict[str, NextStep] = OrderedDict()
        self.limit = limit

    def put(self, call_sid: str, step: NextStep) -> None:
        self.steps[call_sid] = step
        self.steps.move_to_end(call_sid)
        while len(self.steps) > self.limit:
            self.steps.popitem(last=False)

    def get(self, call_sid: str) -> NextStep | None:
        return self.steps.get(call_sid)

    def pop(self, call_sid: str) -> NextStep | None:
        return self.steps.pop(call_sid, None)


def exotel_calls(connection: HTTPConnection) -> ExotelCalls:
    """The app's ExotelCalls (made with the first Exotel request it serves)."""
    calls: ExotelCalls | None = getattr(connection.app.state, "exotel_calls", None)
    if calls is None:
        calls = connection.app.state.exotel_calls = ExotelCalls()
    return calls


Calls = Annotated[ExotelCalls, Depends(exotel_calls)]


def credentials(settings: Settings) -> ExotelCredentials | None:
    if settings.exotel_api_key and settings.exotel_api_token:
        return ExotelCredentials(settings.exotel_api_key, settings.exotel_api_token)
    return None


def verify_request(settings: Settings, request: Request) -> None:
    problem = authorization_problem(request.headers.get("authorization"), credentials(settings))
    if problem is not None:
        raise TelephonySignatureInvalid(f"Exotel request refused: {problem}")


async def call_params(request: Request) -> dict[str, str]:
    """Exotel's call parameters: the query string (its applets make GET requests), and a form
    body for a POST."""
    params = dict(request.query_params)
    if request.method == "POST" and "form" in request.headers.get("content-type", ""):
        params.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    return params


def required_call_sid(params: dict[str, str]) -> str:
    call_sid = params.get("CallSid", "")
    if not call_sid or len(call_sid) > 128 or not call_sid.isascii():
        raise InvalidRequest("CallSid", call_sid or None, "required: Exotel sends it with every applet request")
    return call_sid


def stream_url(settings: Settings, request: Request, query: str) -> str:
    """The stream URL for Exotel, with the credentials Exotel then sends as Basic auth."""
    base = ws_base(base_url(settings, request))
    scheme, _, rest = base.partition("://")
    user = quote(settings.exotel_api_key or "", safe="")
    password = quote(settings.exotel_api_token or "", safe="")
    return f"{scheme}://{user}:{password}@{rest}{EXOTEL_STREAM_PATH}?{query}"


@router.api_route(f"{EXOTEL_PREFIX}/{{agent}}", methods=["GET", "POST"])
async def exotel_voicebot(agent: str, request: Request, state: State, calls: Calls) -> Response:
    """The Voicebot applet's dynamic URL: admit the call, answer the stream URL."""
    verify_request(state.settings, request)
    params = await call_params(request)
    call_sid = required_call_sid(params)
    tel = state.settings.telephony
    back = parse_qs((calls.pop(call_sid) or NextStep(None)).query)  # a held caller coming back
    attempt = back.get("attempt", ["0"])[0]
    replay = f"exotel:{call_sid}" in state.call_sessions and not back
    answer = await admit_call(
        state, carrier="exotel", agent=agent, call_id=call_sid,
        call={k: params[k] for k in CALL_FIELDS if k in params},
        caller=params.get("CallFrom") or params.get("From"), attempt=int(attempt) if attempt.isdigit() else 0,
        held=back.get("session", [None])[0], region=request.query_params.get("region") or None)
    if isinstance(answer, ConnectStream):
        url = stream_url(state.settings, request, f"{TOKEN_PARAMETER}={state.tokens.mint(answer.session_id)}")
        return JSONResponse({"url": url})
    if isinstance(answer, Hold):
        message = tel.busy_message if answer.say else None
        calls.put(call_sid, NextStep(message, again=True, query=answer.query))
    elif isinstance(answer, Goodbye) and not replay:  # a replay's goodbye is not the live call's
        calls.put(call_sid, NextStep(answer.message))
    log.info("exotel call %s for %s: no stream now (%s)", call_sid, agent, type(answer).__name__.lower())
    return JSONResponse({"url": stream_url(state.settings, request, f"{UNSERVED}=1")})


@router.api_route(f"{EXOTEL_PREFIX}/{{agent}}/ended", methods=["GET", "POST"])
async def exotel_ended(agent: str, request: Request, state: State, calls: Calls) -> Response:
    """Passthru after the Voicebot applet: 302 when the caller has something to hear (the
    Greeting applet then asks ``/say``), 200 when not."""
    verify_request(state.settings, request)
    call_sid = required_call_sid(await call_params(request))
    step = calls.get(call_sid)
    if step is None:  # the call had its stream: lost_message if its bot failed
        session_id = state.call_sessions.get(f"exotel:{call_sid}")
        step = NextStep(await after_stream(state, session_id) if session_id else None)
        calls.put(call_sid, step)
    if step.message is None:
        return Response("nothing to say", status_code=200, media_type="text/plain")
    return Response("say", status_code=302, media_type="text/plain")


@router.api_route(f"{EXOTEL_PREFIX}/{{agent}}/say", methods=["GET", "HEAD"])
async def exotel_say(agent: str, request: Request, state: State, calls: Calls) -> Response:
    """Greeting applet, text from a URL: what the caller hears (Exotel reads it out)."""
    verify_request(state.settings, request)
    step = calls.get(required_call_sid(await call_params(request)))
    message = step.message if step is not None and step.message else state.settings.telephony.goodbye_message
    # Exotel: Content-Type text/plain "and nothing else"
    return Response(message.encode(), headers={"Content-Type": "text/plain"})


@router.api_route(f"{EXOTEL_PREFIX}/{{agent}}/hold", methods=["GET", "POST"])
async def exotel_hold(agent: str, request: Request, state: State, calls: Calls) -> Response:
    """Passthru before the Hangup applet: 200 sends a holding caller back to the Voicebot applet
    after ``hold_check_s`` (the caller waits while this answers), 302 ends the call."""
    verify_request(state.settings, request)
    call_sid = required_call_sid(await call_params(request))
    step = calls.get(call_sid)
    if step is not None and step.again:
        await asyncio.sleep(state.settings.telephony.hold_check_s)
        return Response("hold", status_code=200, media_type="text/plain")
    calls.pop(call_sid)
    return Response("hang up", status_code=302, media_type="text/plain")


@router.websocket(EXOTEL_STREAM_PATH)
async def exotel_stream(websocket: WebSocket, state: State) -> None:
    """The Voicebot applet's media stream for a call admitted above."""
    problem = authorization_problem(websocket.headers.get("authorization"), credentials(state.settings))
    if problem is not None:
        await reject(websocket, StreamCredentialsInvalid(problem))
        return
    await websocket.accept()
    if websocket.query_params.get(UNSERVED):
        await websocket.close(1000, "no bot for this call: the flow's next applet tells the caller")
        return
    check = ExotelStreamCheck()
    try:
        connected, start = await read_start(websocket, check, json.dumps({"event": "connected"}))
        session_id = admitted_session(state, websocket, check)
    except StreamRejected as exc:
        await reject(websocket, exc)
        return
    await run_stream(state, websocket, session_id, check, "exotel", [connected, without_token(start)])


def admitted_session(state: AppState, websocket: WebSocket, check: ExotelStreamCheck) -> str:
    """The session a stream's token admits (the token from ``start.custom_parameters``, where
    Exotel puts the stream URL's query parameters, else from the URL itself)."""
    started = check.started or {}
    session_id = state.tokens.consume(check.token or websocket.query_params.get(TOKEN_PARAMETER))
    account = state.settings.exotel_account_sid
    if account and started.get("account_sid") != account:
        raise StreamCredentialsInvalid(f"start.account_sid {started.get('account_sid')!r} is not EXOTEL_ACCOUNT_SID")
    if state.call_sessions.get(f"exotel:{started.get('call_sid')}") != session_id:
        raise StreamTokenInvalid("stream token is for another call (start.call_sid)")
    return session_id


