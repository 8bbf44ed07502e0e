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

Transfer: ``POST /v1/sessions/{id}/transfer {to}`` hands a live call to a number (Twilio: the
call's TwiML is replaced by a ``<Dial>``; Plivo: the call is sent to a voxfleet URL answering
one); the bot stops and the session ends ``transferred``.

What is carrier-neutral lives here; a carrier that can dial is a :class:`Dialer` in ``DIALERS``
(its REST calls), plus its answer and status webhooks, which call :func:`answered` and
:func:`report` (Twilio's: ``control/twilio_calls.py``; Plivo's: ``control/plivo_calls.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from voxfleet.config import Settings
from voxfleet.control import plivo_rest, telnyx_rest, twilio_rest
from voxfleet.control.calls import remember_call
from voxfleet.control.state import AppState, State, require_private
from voxfleet.control.telephony import base_url
from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import CallNotFound, InvalidRequest, SessionConflict, SessionNotFound, VoxfleetError
from voxfleet.scheduler.sessions import ACTIVE, ENDED, SessionRecord
from voxfleet.transports.call_progress import FINAL, CallProgress

log = logging.getLogger(__name__)

router = APIRouter(tags=["calls"])
private = [Depends(require_private)]

E164 = r"^\+[1-9][0-9]{6,14}$"
CONNECT_GRACE_S = 30.0  # after the ring timeout: answer webhook + stream, before the session gives up
REPORT_GRACE_S = 10.0  # after the ring timeout: the carrier's no-answer report, before voxfleet cancels
MAX_CALLS_TRACKED = 10_000


@dataclass(frozen=True)
class Dialer:
    """A carrier voxfleet can place and move calls with (its REST API).

    - ``check(settings)``: CarrierNotConfigured without its credentials;
    - ``dial(settings, to=, from_=, answer_url=, status_url=, ring_timeout_s=, machine_detection=)``
      -> ``{"sid": the carrier's call id, "status": our status}``; InvalidRequest naming ``to`` /
      ``from`` for a number it refuses, CarrierError otherwise;
    - ``end(settings, call_id, canceled)``: cancel a ringing call / hang up a live one;
    - ``transfer(settings, call_id, to, from_)``: hand a live call to a number.
    ``webhooks``: the path its answer (``/outbound``) and status (``/status``) webhooks hang from.
    """

    check: Callable[[Settings], None]
    dial: Callable[..., Awaitable[dict[str, Any]]]
    end: Callable[[Settings, str, bool], Awaitable[None]]
    transfer: Callable[[Settings, str, str, str | None], Awaitable[None]]
    webhooks: str


DIALERS: dict[str, Dialer] = {
    "twilio": Dialer(twilio_rest.client, twilio_rest.dial, twilio_rest.end, twilio_rest.transfer,
                     "/v1/telephony/twilio"),
    "telnyx": Dialer(telnyx_rest.check, telnyx_rest.dial, telnyx_rest.end, telnyx_rest.transfer,
                     "/v1/telephony/telnyx"),
    "plivo": Dialer(plivo_rest.check, plivo_rest.dial, plivo_rest.end, plivo_rest.transfer, "/v1/telephony/plivo"),
}


class DialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    to: str = Field(pattern=E164, description="The number to call, E.164 (+15551234567).")
    from_: str = Field(alias="from", pattern=E164, description="Your carrier number the call comes from, E.164.")
    body: dict[str, Any] | None = Field(
        default=None, description="Given to the bot as runner_args.body (its \"call\" key is set by voxfleet).")
    machineDetection: Literal["Enable", "DetectMessageEnd"] | None = Field(
        default=None, description="Answering-machine detection (Twilio, Telnyx: its AnsweredBy reaches the bot as the "
        "stream's answeredBy parameter; Plivo: machine_detection, its Machine in the timeline only).")
    ringTimeoutS: int | None = Field(default=None, ge=5, le=600,
                                     description="How long it rings (default telephony.ring_timeout_s).")
    carrier: Literal["twilio", "telnyx", "plivo"] = Field(default="twilio", description="The carrier that places the call.")
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


def report(state: AppState, record: SessionRecord, status: str, detail: str = "", **data: Any) -> None:
    """A status (``call_progress.STATUSES``) of the session's dialled call, from its carrier's
    status webhook; a final one of a call never answered ends the session with its reason (which
    releases its bot), once."""
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
    dialer = DIALERS[request.carrier]
    dialer.check(settings)  # credentials first: nothing is reserved for a call that cannot be placed
    ring = request.ringTimeoutS or settings.telephony.ring_timeout_s
    body = {**(request.body or {}), "call": {"To": request.to, "From": request.from_, "Direction": "outbound-api"}}
    service = state.service
    record = await service.start_session(agent, body, transport=request.carrier, region=request.region, queue=False,
                                         connect_timeout=ring + CONNECT_GRACE_S)
    progress = state.outbound[record.session_id] = CallProgress()
    while len(state.outbound) > MAX_CALLS_TRACKED:
        state.outbound.popitem(last=False)
    record.call = {"carrier": request.carrier, "direction": "outbound", "carrierCallId": None, "from": request.from_,
                   "to": request.to, "ringTimeoutS": ring, **progress.to_public()}
    try:
        await service.bot_started(record.session_id)  # an answered call never waits for its bot
    except VoxfleetError:
        log.warning("session %s: its bot could not start; %s is not called", record.session_id, request.to)
        raise
    hooks = f"{base_url(settings, http_request)}{dialer.webhooks}/{agent}"
    query = f"?session={record.session_id}"
    try:
        placed = await dialer.dial(
            settings, to=request.to, from_=request.from_, answer_url=f"{hooks}/outbound{query}",
            status_url=f"{hooks}/status{query}", ring_timeout_s=ring, machine_detection=request.machineDetection)
    except VoxfleetError as exc:
        report(state, record, "failed", str(exc))  # ends the session dial_failed: its bot is released
        raise
    if placed["sid"]:  # else its carrier's first signed webhook says it (Telnyx's answer may not)
        # a callback may have come first and named the call already (Plivo's CallUUID): it stays
        record.call["carrierCallId"] = record.call.get("carrierCallId") or placed["sid"]
        remember_call(state, request.carrier, placed["sid"], record.session_id)
    report(state, record, placed.get("status") or "queued")
    service.tasks.spawn(_ring_deadline(state, record, ring + REPORT_GRACE_S), f"ring:{record.session_id}")
    log.info("session %s: calling %s from %s (%s call %s)", record.session_id, request.to, request.from_,
             request.carrier, placed["sid"])
    return JSONResponse(call_view(record), status_code=201)


async def _ring_deadline(state: AppState, record: SessionRecord, seconds: float) -> None:
    """A call whose carrier never reported it answered or over: canceled at the carrier, and its
    session ended no_answer (a lost status callback must not hold a bot for ever)."""
    await asyncio.sleep(seconds)
    progress = state.outbound.get(record.session_id)
    if record.state == ENDED or progress is None or progress.answered_at is not None:
        return
    log.warning("session %s: its call was not answered within %.0fs; canceling it", record.session_id, seconds)
    report(state, record, "no-answer", f"not answered within {seconds:.0f}s")  # before the carrier's "canceled"
    await _end_at_carrier(state, record, "canceled")


async def _end_at_carrier(state: AppState, record: SessionRecord, status: str) -> None:
    call_id, dialer = record.call.get("carrierCallId"), DIALERS.get(record.call.get("carrier", ""))
    if not call_id or dialer is None:
        return
    try:
        await dialer.end(state.settings, call_id, status == "canceled")
    except VoxfleetError as exc:  # a call already over at the carrier cannot be ended again
        log.warning("session %s: could not end call %s at %s: %s", record.session_id, call_id,
                    record.call.get("carrier"), exc)


def session_of_call(state: AppState, request: Request, field: str, call_id: str | None) -> SessionRecord | None:
    """The session a carrier's webhook of a dialled call is for (its ``?session=``), or None when
    it is gone; InvalidRequest naming `field` if `call_id` is another call's."""
    try:
        record = state.service.get(request.query_params.get("session", ""))
    except SessionNotFound:
        return None
    known = record.call.get("carrierCallId")
    if known and call_id != known:
        raise InvalidRequest(field, call_id, f"session {record.session_id} is call {known}")
    return record


def answered(state: AppState, record: SessionRecord, answered_by: str | None) -> None:
    """The callee answered (the carrier's answer webhook): the carrier's markup then connects
    the call's media stream to the session's bot."""
    report(state, record, "answered", answeredBy=answered_by)


async def _call_record(state: AppState, call_id: str) -> SessionRecord | dict[str, Any]:
    """The call's session: its live record while it is in memory (DELETE acts on it), else its
    stored public form."""
    try:
        record: SessionRecord | dict[str, Any] = state.service.get(call_id)
    except SessionNotFound:
        try:
            record = await state.public_session(call_id)
        except SessionNotFound:
            raise CallNotFound(call_id) from None
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
        report(state, record, "canceled", "canceled through DELETE /v1/calls/{id}")
    else:
        await _end_at_carrier(state, record, "completed")
        await state.service.hang_up(record.session_id, EndReason.HANGUP)
    return call_view(record)


@router.post("/v1/sessions/{session_id}/transfer", dependencies=private)
async def transfer(session_id: str, request: TransferRequest, state: State) -> dict[str, Any]:
    """Hand a live phone call to a number; its bot stops and the session ends ``transferred``."""
    record = state.service.get(session_id)
    call_id, dialer = record.call.get("carrierCallId"), DIALERS.get(record.transport)
    if dialer is None or not call_id:
        raise SessionConflict(session_id, f"a {record.transport} session",
                              f"transfer it (only phone calls of {', '.join(DIALERS)} can be transferred)")
    if record.state != ACTIVE:
        raise SessionConflict(session_id, record.state, "transfer it (only a connected call can be)")
    detail = f"to {request.to}"
    # the carrier closes the call's stream as it hands the call over: that end is the transfer's
    record.expected_end = (EndReason.TRANSFERRED, detail)
    try:
        await dialer.transfer(state.settings, call_id, request.to, request.from_)
    except VoxfleetError:
        record.expected_end = None
        raise
    record.call["transfer"] = {"to": request.to, "at": time.time()}
    log.info("session %s: call %s transferred %s", session_id, call_id, detail)
    await state.service.hang_up(session_id, EndReason.TRANSFERRED)
    return record.to_public()
