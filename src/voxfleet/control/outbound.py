"""Calls both ways: outbound calls placed through the carrier, and transfers of live calls.

Dial out: ``POST /v1/agents/{agent}/calls {to, from, body?, machineDetection?, ringTimeoutS?}``
(private key). The session is admitted first and never queued (no capacity: 429, nothing is
dialled), and its bot is started (or a warm one taken) before the carrier is asked to dial, so an
answered call never waits for a bot. Twilio then asks ``.../outbound`` for TwiML when the callee
answers (a ``<Connect><Stream>`` to that bot, as for an inbound call) and reports the call's
progress to ``.../status`` (signed, like every Twilio webhook). A call that is not answered
(busy, no-answer, failed, canceled, or no answer within its ring timeout) ends its session with
that reason, which releases its reservation. ``GET /v1/calls/{id}`` shows the call's timeline,
``DELETE /v1/calls/{id}`` cancels (or ends) it.

Transfer: ``POST /v1/sessions/{id}/transfer {to}`` hands a live Twilio call to a number (the
call's TwiML is replaced by a ``<Dial>``); the bot stops and the session ends ``transferred``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from twilio.twiml.voice_response import VoiceResponse

from voxfleet.control import twilio_rest
from voxfleet.control.calls import remember_call
from voxfleet.control.state import AppState, State, require_private
from voxfleet.control.telephony import base_url, connect_stream, goodbye, hang_up_twiml, verify_signature
from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import CallNotFound, InvalidRequest, SessionConflict, SessionNotFound, VoxfleetError
from voxfleet.scheduler.sessions import ACTIVE, ENDED, SessionRecord
from voxfleet.transports.call_progress import FINAL, TWILIO_STATUS, CallProgress

log = logging.getLogger(__name__)

router = APIRouter(tags=["calls"])
private = [Depends(require_private)]

E164 = r"^\+[1-9][0-9]{6,14}$"
CONNECT_GRACE_S = 30.0  # after the ring timeout: answer webhook + stream, before the session gives up
REPORT_GRACE_S = 10.0  # after the ring timeout: the carrier's no-answer report, before voxfleet cancels
MAX_CALLS_TRACKED = 10_000


class DialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    to: str = Field(pattern=E164, description="The number to call, E.164 (+15551234567).")
    from_: str = Field(alias="from", pattern=E164, description="Your carrier number the call comes from, E.164.")
    body: dict[str, Any] | None = Field(
        default=None, description="Given to the bot as runner_args.body (its \"call\" key is set by voxfleet).")
    machineDetection: Literal["Enable", "DetectMessageEnd"] | None = Field(
        default=None, description="Twilio answering-machine detection; its AnsweredBy reaches the bot as the "
        "stream's answeredBy parameter and the call's timeline.")
    ringTimeoutS: int | None = Field(default=None, ge=5, le=600,
                                     description="How long it rings (default telephony.ring_timeout_s).")
    carrier: Literal["twilio"] = "twilio"
    region: str | None = Field(default=None, max_length=64, description="The region to run the bot in.")


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    to: str = Field(pattern=E164, description="The number to hand the call to, E.164.")
    from_: str | None = Field(default=None, alias="from", pattern=E164,
                              description="The caller id the number sees (default: the call's own).")


def call_view(record: SessionRecord | dict[str, Any]) -> dict[str, Any]:
    """A call: its carrier side and timeline, and its session's state and end."""
    public = record.to_public() if isinstance(record, SessionRecord) else record
    return {"callId": public["sessionId"], "sessionId": public["sessionId"], "agent": public["agent"],
            **public.get("call", {}), "state": public["state"], "endReason": public["endReason"],
            "endDetail": public["endDetail"], "timingsMs": public["timingsMs"],
            "ttfwMs": (public.get("latency") or {}).get("ttfwMs")}


def _progress_changed(state: AppState, record: SessionRecord, progress: CallProgress) -> None:
    record.call.update(progress.to_public())
    state.service.on_change(record)  # stored with the record


def _report(state: AppState, record: SessionRecord, status: str, detail: str = "", **data: Any) -> None:
    """A status of the session's dialled call; a final one of a call never answered ends the
    session with its reason (which releases its bot), once."""
    progress = state.outbound.get(record.session_id)
    if progress is None:
        return
    ended = progress.report(status, time.time(), detail, **data)
    _progress_changed(state, record, progress)
    if ended is not None and record.state != ENDED:
        log.info("session %s: its call ended unanswered (%s): %s", record.session_id, ended.reason, ended.detail)
        record.expected_end = (ended.reason, ended.detail)
        state.service.tasks.spawn(state.service.hang_up(record.session_id, ended.reason),
                                  f"unanswered:{record.session_id}")


@router.post("/v1/agents/{agent}/calls", status_code=201, dependencies=private)
async def dial_out(agent: str, request: DialRequest, http_request: Request, state: State) -> JSONResponse:
    """Place an outbound call answered by a bot of `agent` (reserved before it is dialled)."""
    settings = state.settings
    twilio_rest.client(settings)  # credentials first: nothing is reserved for a call that cannot be placed
    ring = request.ringTimeoutS or settings.telephony.ring_timeout_s
    body = {**(request.body or {}), "call": {"To": request.to, "From": request.from_, "Direction": "outbound-api"}}
    service = state.service
    record = await service.start_session(agent, body, transport="twilio", region=request.region, queue=False,
                                         connect_timeout=ring + CONNECT_GRACE_S)
    progress = state.outbound[record.session_id] = CallProgress()
    while len(state.outbound) > MAX_CALLS_TRACKED:
        state.outbound.popitem(last=False)
    record.call = {"carrier": "twilio", "direction": "outbound", "carrierCallId": None, "from": request.from_,
                   "to": request.to, "ringTimeoutS": ring, **progress.to_public()}
    try:
        await service.bot_started(record.session_id)  # an answered call never waits for its bot
    except VoxfleetError:
        log.warning("session %s: its bot could not start; %s is not called", record.session_id, request.to)
        raise
    base = base_url(settings, http_request)
    query = f"?session={record.session_id}"
    try:
        placed = await twilio_rest.dial(
            settings, to=request.to, from_=request.from_, url=f"{base}/v1/telephony/twilio/{agent}/outbound{query}",
            status_callback=f"{base}/v1/telephony/twilio/{agent}/status{query}", ring_timeout_s=ring,
            machine_detection=request.machineDetection)
    except VoxfleetError as exc:
        _report(state, record, "failed", str(exc))  # ends the session dial_failed: its bot is released
        raise
    record.call["carrierCallId"] = placed["sid"]
    remember_call(state, "twilio", placed["sid"], record.session_id)
    _report(state, record, TWILIO_STATUS.get(placed.get("status") or "", "queued"))
    service.tasks.spawn(_ring_deadline(state, record, ring + REPORT_GRACE_S), f"ring:{record.session_id}")
    log.info("session %s: calling %s from %s (Twilio call %s)", record.session_id, request.to, request.from_,
             placed["sid"])
    return JSONResponse(call_view(record), status_code=201)


async def _ring_deadline(state: AppState, record: SessionRecord, seconds: float) -> None:
    """A call whose carrier never reported it answered or over: canceled at the carrier, and its
    session ended no_answer (a lost status callback must not hold a bot for ever)."""
    await asyncio.sleep(seconds)
    progress = state.outbound.get(record.session_id)
    if record.state == ENDED or progress is None or progress.answered_at is not None:
        return
    log.warning("session %s: its call was not answered within %.0fs; canceling it", record.session_id, seconds)
    _report(state, record, "no-answer", f"not answered within {seconds:.0f}s")  # before the carrier's "canceled"
    await _end_at_carrier(state, record, "canceled")


async def _end_at_carrier(state: AppState, record: SessionRecord, status: str) -> None:
    call_sid = record.call.get("carrierCallId")
    if not call_sid:
        return
    try:
        await twilio_rest.update(state.settings, call_sid, f"end call {call_sid}", status=status)
    except VoxfleetError as exc:  # a call already over at the carrier cannot be ended again
        log.warning("session %s: could not end call %s at Twilio: %s", record.session_id, call_sid, exc)


def _session_of_call(state: AppState, request: Request) -> SessionRecord | None:
    try:
        return state.service.get(request.query_params.get("session", ""))
    except SessionNotFound:
        return None


def _check_call_sid(record: SessionRecord, params: dict[str, str]) -> None:
    known = record.call.get("carrierCallId")
    if known and params.get("CallSid") != known:
        raise InvalidRequest("CallSid", params.get("CallSid"), f"session {record.session_id} is call {known}")


@router.post("/v1/telephony/twilio/{agent}/outbound")
async def outbound_answered(agent: str, request: Request, state: State) -> Response:
    """Twilio: the callee of an outbound call answered; connect it to the session's bot."""
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(state.settings, request, params)
    record = _session_of_call(state, request)
    if record is None or record.state == ENDED:  # canceled or timed out as it was answered
        return goodbye(state.settings.telephony.goodbye_message) if record is None else hang_up_twiml()
    _check_call_sid(record, params)
    answered_by = params.get("AnsweredBy")
    _report(state, record, "answered", answeredBy=answered_by)
    return connect_stream(state, request, record.session_id, {"answeredBy": answered_by} if answered_by else None)


@router.post("/v1/telephony/twilio/{agent}/status")
async def outbound_status(agent: str, request: Request, state: State) -> Response:
    """Twilio's status callback of an outbound call: recorded in its timeline; a call that ended
    unanswered ends its session."""
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(state.settings, request, params)
    status = TWILIO_STATUS.get(params.get("CallStatus", ""))
    if status is None:
        raise InvalidRequest("CallStatus", params.get("CallStatus"), f"one of {', '.join(TWILIO_STATUS)}")
    record = _session_of_call(state, request)
    if record is not None:
        _check_call_sid(record, params)
        detail = " ".join(f"{k} {params[k]}" for k in ("SipResponseCode", "ErrorCode") if params.get(k))
        _report(state, record, status, detail, answeredBy=params.get("AnsweredBy"),
                durationS=params.get("CallDuration"))
    return Response(status_code=204)


async def _call_record(state: AppState, call_id: str) -> SessionRecord | dict[str, Any]:
    try:
        record: SessionRecord | dict[str, Any] = state.service.get(call_id)
    except SessionNotFound:
        stored = await state.store.get_session(call_id)
        if stored is None:
            raise CallNotFound(call_id) from None
        record = stored
    call = record.call if isinstance(record, SessionRecord) else record.get("call")
    if not call:
        raise CallNotFound(call_id)
    return record


@router.get("/v1/calls/{call_id}", dependencies=private)
async def get_call(call_id: str, state: State) -> dict[str, Any]:
    """A phone call (outbound or inbound): its numbers, carrier status and timeline, its session's end."""
    return call_view(await _call_record(state, call_id))


@router.delete("/v1/calls/{call_id}", dependencies=private)
async def end_call(call_id: str, state: State) -> dict[str, Any]:
    """Cancel a call that is not answered yet (its session ends canceled), or hang up one that is."""
    record = await _call_record(state, call_id)
    if not isinstance(record, SessionRecord) or record.state == ENDED:
        return call_view(record)
    progress = state.outbound.get(record.session_id)
    if progress is not None and progress.answered_at is None and progress.status not in FINAL:
        await _end_at_carrier(state, record, "canceled")
        _report(state, record, "canceled", "canceled through DELETE /v1/calls/{id}")
    else:
        await _end_at_carrier(state, record, "completed")
        await state.service.hang_up(record.session_id, EndReason.HANGUP)
    return call_view(record)


@router.post("/v1/sessions/{session_id}/transfer", dependencies=private)
async def transfer(session_id: str, request: TransferRequest, state: State) -> dict[str, Any]:
    """Hand a live phone call to a number; its bot stops and the session ends ``transferred``."""
    record = state.service.get(session_id)
    call_sid = record.call.get("carrierCallId")
    if record.transport != "twilio" or not call_sid:
        raise SessionConflict(session_id, f"a {record.transport} session",
                              "transfer it (only Twilio phone calls can be transferred)")
    if record.state != ACTIVE:
        raise SessionConflict(session_id, record.state, "transfer it (only a connected call can be)")
    twiml = VoiceResponse()
    dial = twiml.dial(caller_id=request.from_) if request.from_ else twiml.dial()
    dial.number(request.to)
    detail = f"to {request.to}"
    # Twilio closes the call's stream as it hands the call over: that end is the transfer's
    record.expected_end = (EndReason.TRANSFERRED, detail)
    try:
        await twilio_rest.update(state.settings, call_sid, f"transfer call {call_sid} to {request.to}",
                                 {"to": request.to}, twiml=str(twiml))
    except VoxfleetError:
        record.expected_end = None
        raise
    record.call["transfer"] = {"to": request.to, "at": time.time()}
    log.info("session %s: call %s transferred %s", session_id, call_sid, detail)
    await state.service.hang_up(session_id, EndReason.TRANSFERRED)
    return record.to_public()
