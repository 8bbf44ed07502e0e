"""Telnyx's webhooks of the calls voxfleet places through TeXML (``control/outbound.py``,
``control/telnyx_rest.py``).

- ``/v1/telephony/telnyx/{agent}/outbound?session=``: the callee answered and Telnyx asks the
  call's ``Url`` for TeXML; it connects the call to the session's bot as for an inbound call
  (``<Connect><Stream>`` + ``<Redirect>``; with machine detection, Telnyx's ``AnsweredBy``
  reaches the bot as the stream's ``answeredBy`` parameter);
- ``/v1/telephony/telnyx/{agent}/status?session=``: the call's status callbacks
  (``CallStatus`` initiated, ringing, in-progress, completed, busy, no-answer, failed, canceled).

Both are signed with Telnyx's Ed25519 key (``signed_form``), and their ``CallSid`` must be the
session's call. When Telnyx's answer to the dial had no call id, the first signed webhook's
``CallSid`` is taken as the call's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voxfleet.control.calls import remember_call
from voxfleet.control.outbound import answered, report, session_of_call
from voxfleet.control.state import AppState, State
from voxfleet.control.telnyx import CARRIER, connect_stream, goodbye, signed_form
from voxfleet.exceptions import InvalidRequest
from voxfleet.scheduler.sessions import ENDED, SessionRecord
from voxfleet.transports.call_progress import TELNYX_STATUS

router = APIRouter(tags=["telephony"])


def _session(state: AppState, request: Request, params: dict[str, str]) -> SessionRecord | None:
    call_sid = params.get("CallSid")
    if not call_sid:
        raise InvalidRequest("CallSid", call_sid, "required: Telnyx sends it with every TeXML request")
    record = session_of_call(state, request, "CallSid", call_sid)
    if record is not None and not record.call.get("carrierCallId"):
        record.call["carrierCallId"] = call_sid
        remember_call(state, CARRIER, call_sid, record.session_id)
    return record


@router.post("/v1/telephony/telnyx/{agent}/outbound")
async def outbound_answered(agent: str, request: Request, state: State) -> Response:
    """Telnyx: the callee of an outbound TeXML call answered; connect it to the session's bot."""
    params = await signed_form(state, request)
    record = _session(state, request, params)
    if record is None:
        return goodbye(state.settings.telephony.goodbye_message)
    if record.state == ENDED:  # canceled or timed out as it was answered
        return goodbye(None)
    answered_by = params.get("AnsweredBy")
    answered(state, record, answered_by)
    return connect_stream(state, request, record.session_id, {"answeredBy": answered_by} if answered_by else None)


@router.post("/v1/telephony/telnyx/{agent}/status")
async def outbound_status(agent: str, request: Request, state: State) -> Response:
    """Telnyx's status callback of an outbound TeXML call: recorded in its timeline; a call that
    ended unanswered ends its session."""
    params = await signed_form(state, request)
    status = TELNYX_STATUS.get(params.get("CallStatus", ""))
    if status is None:
        raise InvalidRequest("CallStatus", params.get("CallStatus"), f"one of {', '.join(TELNYX_STATUS)}")
    record = _session(state, request, params)
    if record is not None:
        detail = " ".join(f"{k} {params[k]}" for k in ("SipResponseCode", "ErrorCode", "ErrorMessage")
                          if params.get(k))
        report(state, record, status, detail, answeredBy=params.get("AnsweredBy"), durationS=params.get("CallDuration"))
    return Response(status_code=204)
