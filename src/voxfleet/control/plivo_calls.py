"""Plivo's webhooks of the calls voxfleet places (``control/outbound.py``) and transfers.

- ``/v1/telephony/plivo/{agent}/outbound?session=``: the call's ``answer_url``: the callee
  answered; Plivo XML connects the call to the session's bot, as for an inbound call (with
  machine detection, Plivo's ``Machine`` true/false is recorded in the call's timeline as
  ``answeredBy`` machine/human);
- ``/v1/telephony/plivo/{agent}/status?session=``: its ``ring_url`` and ``hangup_url``
  (``CallStatus`` ringing, then completed / busy / no-answer / failed / timeout / cancel, with
  ``HangupCause`` and ``Duration``);
- ``/v1/telephony/plivo/transfer/dial?to=&from=&exp=``: a transfer's ``aleg_url``
  (``control/plivo_rest.py``): ``<Dial><Number>``.

All are signed by Plivo (``X-Plivo-Signature-V3``, ``control/plivo.verify``). Plivo names an
outbound call by the ``request_uuid`` voxfleet was given until it rings; every callback carries
both that (``RequestUUID``) and its ``CallUUID``: the session's ``RequestUUID`` must match, and
from then on the call is known by its ``CallUUID`` (what a hang-up and a transfer need).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response
from plivo import plivoxml  # type: ignore[import-untyped]

from voxfleet.control.outbound import answered, report
from voxfleet.control.plivo import connect_stream, form_params, goodbye, plivo_xml, verify
from voxfleet.control.plivo_rest import TRANSFER_PATH
from voxfleet.control.state import AppState, State
from voxfleet.exceptions import InvalidRequest, SessionNotFound
from voxfleet.scheduler.sessions import ENDED, SessionRecord
from voxfleet.transports.call_progress import PLIVO_STATUS

router = APIRouter(tags=["telephony"])

PLIVO_NUMBER = re.compile(r"^[1-9][0-9]{6,14}$")
MACHINE = {"true": "machine", "false": "human"}


async def _signed(state: AppState, request: Request) -> dict[str, str]:
    params = await form_params(request)
    verify(state, request, params)
    return params


def _session_of(state: AppState, request: Request, params: dict[str, str]) -> SessionRecord | None:
    """The session (``?session=``) a callback of a dialled call is for, or None when it is gone;
    InvalidRequest if the callback's ``RequestUUID`` is another call's. The call's ``CallUUID``
    becomes its ``carrierCallId``."""
    try:
        record = state.service.get(request.query_params.get("session", ""))
    except SessionNotFound:
        return None
    request_uuid = params.get("RequestUUID") or params.get("ALegRequestUUID")
    known = record.call.get("requestUuid") or record.call.get("carrierCallId")
    if known and request_uuid != known:
        raise InvalidRequest("RequestUUID", request_uuid, f"session {record.session_id} is call request {known}")
    call_uuid = params.get("CallUUID")
    if call_uuid and request_uuid:
        record.call["requestUuid"], record.call["carrierCallId"] = request_uuid, call_uuid
    return record


@router.post("/v1/telephony/plivo/{agent}/outbound")
async def outbound_answered(agent: str, request: Request, state: State) -> Response:
    """Plivo: the callee of an outbound call answered; connect it to the session's bot."""
    params = await _signed(state, request)
    record = _session_of(state, request, params)
    if record is None:
        return goodbye(state.settings.telephony.goodbye_message)
    if record.state == ENDED:  # canceled or timed out as it was answered
        return goodbye(None)
    answered(state, record, MACHINE.get(params.get("Machine", "").lower()))
    return connect_stream(state, request, record.session_id)


@router.post("/v1/telephony/plivo/{agent}/status")
async def outbound_status(agent: str, request: Request, state: State) -> Response:
    """Plivo's ring and hang-up callbacks of an outbound call: recorded in its timeline; a call
    that ended unanswered ends its session."""
    params = await _signed(state, request)
    status = PLIVO_STATUS.get(params.get("CallStatus", ""))
    if status is None:
        raise InvalidRequest("CallStatus", params.get("CallStatus"), f"one of {', '.join(PLIVO_STATUS)}")
    record = _session_of(state, request, params)
    if record is not None:
        detail = " ".join(f"{k} {params[k]}" for k in ("HangupCause", "HangupSource") if params.get(k))
        report(state, record, status, detail, answeredBy=MACHINE.get(params.get("Machine", "").lower()),
               durationS=params.get("Duration"))
    return Response(status_code=204)


@router.post(TRANSFER_PATH)
async def transfer_dial(request: Request, state: State) -> Response:
    """A transfer's ``aleg_url``: the call leaves its stream for ``<Dial><Number>to``."""
    await _signed(state, request)  # the URL (to, from, exp) is covered by Plivo's signature
    numbers = {name: request.query_params.get(name) for name in ("to", "from")}
    for name, number in numbers.items():
        if (number is not None or name == "to") and not PLIVO_NUMBER.match(number or ""):
            raise InvalidRequest(name, number, "a number as Plivo writes it: country code and number, digits only")
    response = plivoxml.ResponseElement()
    dial = plivoxml.DialElement(caller_id=numbers["from"]) if numbers["from"] else plivoxml.DialElement()
    dial.add(plivoxml.NumberElement(numbers["to"]))
    response.add(dial)
    return plivo_xml(response)
