"""Twilio's webhooks of the calls voxfleet places (``control/outbound.py``).

- ``/v1/telephony/twilio/{agent}/outbound?session=``: the callee answered; TwiML connects the
  call to the session's bot, as for an inbound call (with machine detection, Twilio's
  ``AnsweredBy`` reaches the bot as the stream's ``answeredBy`` parameter);
- ``/v1/telephony/twilio/{agent}/status?session=``: the call's status callbacks.

Both are signed (``X-Twilio-Signature``), and their ``CallSid`` must be the session's call.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voxfleet.control.outbound import answered, report, session_of_call
from voxfleet.control.state import State
from voxfleet.control.telephony import connect_stream, goodbye, hang_up_twiml, verify_signature
from voxfleet.exceptions import InvalidRequest
from voxfleet.scheduler.sessions import ENDED
from voxfleet.transports.call_progress import TWILIO_STATUS

router = APIRouter(tags=["telephony"])


async def _signed_form(request: Request, state: State) -> dict[str, str]:
    params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    verify_signature(state.settings, request, params)
    return params


@router.post("/v1/telephony/twilio/{agent}/outbound")
async def outbound_answered(agent: str, request: Request, state: State) -> Response:
    """Twilio: the callee of an outbound call answered; connect it to the session's bot."""
    params = await _signed_form(request, state)
    record = session_of_call(state, request, "CallSid", params.get("CallSid"))
    if record is None:
        return goodbye(state.settings.telephony.goodbye_message)
    if record.state == ENDED:  # canceled or timed out as it was answered
        return hang_up_twiml()
    answered_by = params.get("AnsweredBy")
    answered(state, record, answered_by)
    return connect_stream(state, request, record.session_id, {"answeredBy": answered_by} if answered_by else None)


@router.post("/v1/telephony/twilio/{agent}/status")
async def outbound_status(agent: str, request: Request, state: State) -> Response:
    """Twilio's status callback of an outbound call: recorded in its timeline; a call that ended
    unanswered ends its session."""
    params = await _signed_form(request, state)
    status = TWILIO_STATUS.get(params.get("CallStatus", ""))
    if status is None:
        raise InvalidRequest("CallStatus", params.get("CallStatus"), f"one of {', '.join(TWILIO_STATUS)}")
    record = session_of_call(state, request, "CallSid", params.get("CallSid"))
    if record is not None:
        detail = " ".join(f"{k} {params[k]}" for k in ("SipResponseCode", "ErrorCode") if params.get(k))
        report(state, record, status, detail, answeredBy=params.get("AnsweredBy"), durationS=params.get("CallDuration"))
    return Response(status_code=204)
