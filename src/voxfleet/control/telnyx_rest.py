"""Telnyx's TeXML REST API, for what voxfleet asks of a call: place it, end it, hand it to a number.

With httpx (as ``control/telnyx.py``'s hang-up), Bearer ``TELNYX_API_KEY``, each request bounded
by ``REST_TIMEOUT_S``, against ``telephony.telnyx_api_base`` (default ``https://api.telnyx.com/v2``):

- place: ``POST /texml/Accounts/{TELNYX_ACCOUNT_SID}/Calls`` (JSON: ``ApplicationSid`` =
  ``TELNYX_TEXML_APP_ID``, ``To``, ``From``, ``Url``, ``StatusCallback``, ``StatusCallbackEvent``,
  ``Timeout``, ``MachineDetection``), the current form of TeXML's "initiate an outbound call"
  (``POST /texml/calls/{application_id}`` is deprecated and gone from Telnyx's SDKs);
- end / transfer: TeXML's "update call", ``POST /texml/Accounts/{account}/Calls/{call_sid}``
  (form-encoded): ``Status=completed`` ends the call, ringing or live (the only status Telnyx
  documents), ``Texml=<Response><Dial>...`` replaces what a live call does. A TeXML call is run
  by Telnyx's TeXML interpreter, so voxfleet moves it with TeXML (as Twilio's calls with TwiML)
  rather than with Call Control's ``actions/transfer``, which is Call Control applications' command.

Telnyx's answers become voxfleet's errors here: a number it refuses (errors 10001 inactive,
10002 invalid, 10016 not E.164, or an error whose ``source.pointer`` is ``/To`` / ``/From``) names
the request's field (``to``/``from``, 400); anything else is a ``CarrierError`` (502) with Telnyx's
own code, title and detail.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote

import httpx

from voxfleet.config import Settings
from voxfleet.control.telnyx import DEFAULT_API_BASE
from voxfleet.exceptions import CarrierError, CarrierNotConfigured, InvalidRequest
from voxfleet.transports.call_progress import TELNYX_STATUS

log = logging.getLogger(__name__)

REST_TIMEOUT_S = 10.0
MAX_RING_S = 120  # TeXML's Timeout: 5..120 s
NUMBER_ERRORS = frozenset({"10001", "10002", "10016"})  # developers.telnyx.com: API error codes
STATUS_EVENTS = "initiated ringing answered completed"


def check(settings: Settings, *, placing: bool = True) -> None:
    """CarrierNotConfigured naming what is missing to place calls through TeXML's REST API (to
    end or transfer one, the application is not needed)."""
    needed = [("TELNYX_API_KEY", settings.telnyx_api_key), ("TELNYX_ACCOUNT_SID", settings.telnyx_account_sid)]
    if placing:
        needed.append(("TELNYX_TEXML_APP_ID", settings.telnyx_texml_app_id))
    missing = [name for name, value in needed if not value]
    if missing:
        raise CarrierNotConfigured(f"{'placing' if placing else 'moving'} calls through Telnyx's TeXML REST API "
                                   f"needs {', '.join(n for n, _ in needed)}; not set: {', '.join(missing)}")


def _calls_url(settings: Settings) -> str:
    base = (settings.telephony.telnyx_api_base or DEFAULT_API_BASE).rstrip("/")
    return f"{base}/texml/Accounts/{quote(settings.telnyx_account_sid or '', safe='')}/Calls"


def _error_field(errors: list[Any], fields: dict[str, str]) -> str | None:
    """The request's field (``to`` / ``from``) a Telnyx error is about, if it is about a number."""
    for error in errors:
        if not isinstance(error, dict):
            continue
        pointer = str((error.get("source") or {}).get("pointer", "")).strip("/").lower()
        if pointer in fields:
            return pointer
        if str(error.get("code")) in NUMBER_ERRORS:
            detail = f"{error.get('title', '')} {error.get('detail', '')}".lower()
            return "from" if "from" in detail and "from" in fields else ("to" if "to" in fields else None)
    return None


async def _request(settings: Settings, what: str, fields: dict[str, str], url: str, **body: Any) -> dict[str, Any]:
    """POST to Telnyx (``json=`` or ``data=``); its answer's JSON, or its error as voxfleet's."""
    check(settings, placing="json" in body)
    headers = {"Authorization": f"Bearer {settings.telnyx_api_key}", "Accept": "application/json"}
    try:
        async with httpx.AsyncClient(timeout=REST_TIMEOUT_S) as http:
            response = await http.post(url, headers=headers, **body)
    except httpx.HTTPError as exc:
        raise CarrierError(f"could not {what}: Telnyx's REST API did not answer ({type(exc).__name__}: {exc})") from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not response.is_error:
        return answer if isinstance(answer, dict) else {}
    errors = answer.get("errors") if isinstance(answer, dict) else None
    errors = errors if isinstance(errors, list) else []
    said = "; ".join(f"{e.get('title', '')}: {e.get('detail', '')} (error {e.get('code')})".strip(": ")
                     for e in errors if isinstance(e, dict)) or response.text[:200]
    message = f"Telnyx refused to {what}: {said} (HTTP {response.status_code})"
    field = _error_field(errors, fields) if response.status_code in (400, 422) else None
    if field is not None:
        raise InvalidRequest(field, fields[field], message)
    raise CarrierError(message)


async def dial(settings: Settings, *, to: str, from_: str, answer_url: str, status_url: str, ring_timeout_s: int,
               machine_detection: str | None) -> dict[str, Any]:
    """Place a call whose answer asks `answer_url` for TeXML and whose progress is reported to
    `status_url`; returns its CallSid (its call_control_id; None if Telnyx's answer has none: the
    first signed webhook then tells it) and the status (ours)."""
    if ring_timeout_s > MAX_RING_S:
        raise InvalidRequest("ringTimeoutS", ring_timeout_s, f"Telnyx rings a TeXML call at most {MAX_RING_S} s")
    body: dict[str, Any] = {
        "ApplicationSid": settings.telnyx_texml_app_id, "To": to, "From": from_, "Url": answer_url,
        "UrlMethod": "POST", "StatusCallback": status_url, "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": STATUS_EVENTS, "Timeout": ring_timeout_s}
    if machine_detection:
        body["MachineDetection"] = machine_detection
    answer = await _request(settings, f"call {to}", {"to": to, "from": from_}, _calls_url(settings), json=body)
    call = answer.get("data", answer) if isinstance(answer.get("data"), dict) else answer
    call_sid = call.get("call_sid") or call.get("sid")
    return {"sid": str(call_sid) if call_sid else None, "status": TELNYX_STATUS.get(str(call.get("status")), "queued")}


async def update(settings: Settings, call_sid: str, what: str, fields: dict[str, str] | None = None,
                 **changes: str) -> None:
    """TeXML's update call (form-encoded, CamelCase keys as Telnyx asks): ``Status="completed"``
    ends it, ``Texml=`` replaces what it does."""
    await _request(settings, what, fields or {}, f"{_calls_url(settings)}/{quote(call_sid, safe=':')}", data=changes)


async def end(settings: Settings, call_sid: str, canceled: bool) -> None:
    """Cancel a call still ringing, or end a live one (TeXML documents one status for both: completed)."""
    await update(settings, call_sid, f"{'cancel' if canceled else 'end'} call {call_sid}", Status="completed")


def dial_texml(to: str, from_: str | None) -> str:
    """``<Response><Dial callerId=from_><Number>to</Number></Dial></Response>``."""
    response = ET.Element("Response")
    dial_verb = ET.SubElement(response, "Dial", callerId=from_) if from_ else ET.SubElement(response, "Dial")
    ET.SubElement(dial_verb, "Number").text = to
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


async def transfer(settings: Settings, call_sid: str, to: str, from_: str | None) -> None:
    """Hand a live call to `to`: its TeXML becomes a ``<Dial>``, and Telnyx leaves the call's media
    stream for it."""
    await update(settings, call_sid, f"transfer call {call_sid} to {to}", {"to": to}, Texml=dial_texml(to, from_))
