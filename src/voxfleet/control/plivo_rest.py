"""Plivo's Voice REST API, for what voxfleet asks of a call: place it, cancel or end it, hand it
to a number.

The requests Plivo's own SDK makes (``plivo.resources.calls``), sent with httpx as the inbound
hang-up in ``control/plivo.py`` is (async, each bounded by ``REST_TIMEOUT_S``), JSON bodies,
HTTP Basic with the Auth ID and token:

- place: ``POST /v1/Account/{auth_id}/Call/`` -> 201 ``{message: "call fired", request_uuid}``.
  Plivo knows the call by its ``request_uuid`` until it rings; its ``CallUUID`` arrives with the
  ring, answer and hang-up callbacks;
- cancel a call not yet answered: ``DELETE /v1/Account/{auth_id}/Request/{request_uuid}/``;
  end a live one: ``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`` (both 204);
- transfer: ``POST /v1/Account/{auth_id}/Call/{call_uuid}/ {legs: aleg, aleg_url}`` (202): Plivo
  leaves the call's ``<Stream>`` and runs the XML it fetches from ``aleg_url``, a voxfleet URL
  (``control/plivo_calls.py``) that answers ``<Dial><Number>``. Plivo cannot be handed XML
  inline, so a transfer needs ``public_url``: the address Plivo reaches voxfleet at.

Plivo's answers become voxfleet's errors here: a 400 whose message names one of the request's
numbers names that field (``to``/``from``, 400); anything else Plivo or the network fails is a
``CarrierError`` (502) with Plivo's own message.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from voxfleet.config import Settings
from voxfleet.exceptions import CarrierError, CarrierNotConfigured, InvalidRequest
from voxfleet.transports.plivo_auth import EXPIRY_PARAM

log = logging.getLogger(__name__)

PLIVO_API_BASE = "https://api.plivo.com"
REST_TIMEOUT_S = 10.0
TRANSFER_PATH = "/v1/telephony/plivo/transfer/dial"  # the XML a transfer's aleg_url answers
TRANSFER_URL_VALID_S = 300  # Plivo fetches aleg_url at once; the URL is refused after this


def check(settings: Settings) -> None:
    """CarrierNotConfigured without Plivo's credentials."""
    if not (settings.plivo_auth_id and settings.plivo_auth_token):
        raise CarrierNotConfigured("calls through Plivo's REST API need PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN; "
                                   "neither may be empty")


def plivo_number(e164: str) -> str:
    """Plivo's number format: the country code and number, no ``+`` (``14157654321``)."""
    return e164.removeprefix("+")


async def _request(settings: Settings, method: str, path: str, what: str, fields: dict[str, str],
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to ``{base}/v1/Account/{auth_id}/{path}/``; Plivo's errors as voxfleet's."""
    check(settings)
    auth_id, auth_token = settings.plivo_auth_id or "", settings.plivo_auth_token or ""
    base = (settings.telephony.plivo_api_base or PLIVO_API_BASE).rstrip("/")
    url = f"{base}/v1/Account/{quote(auth_id, safe='')}/{path}/"
    try:
        async with httpx.AsyncClient(timeout=REST_TIMEOUT_S) as http:
            response = await http.request(method, url, json=body, auth=(auth_id, auth_token))
    except httpx.HTTPError as exc:
        raise CarrierError(f"could not {what}: Plivo's REST API did not answer ({type(exc).__name__}: {exc})") from None
    try:
        answer = response.json() if response.content else {}
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code < 300:
        return answer
    error = str(answer.get("error") or response.text[:200] or response.reason_phrase)
    message = f"Plivo refused to {what}: {error} (HTTP {response.status_code})"
    if response.status_code == 400:
        for field, number in fields.items():  # Plivo's message names the number it refuses
            if plivo_number(number) in error:
                raise InvalidRequest(field, number, message)
    raise CarrierError(message)


async def dial(settings: Settings, *, to: str, from_: str, answer_url: str, status_url: str, ring_timeout_s: int,
               machine_detection: str | None) -> dict[str, Any]:
    """Place a call whose answer asks `answer_url` for XML and whose ringing and hang-up are
    reported to `status_url`; returns Plivo's ``request_uuid`` as ``sid``, status ``queued``.
    With machine detection, Plivo sends ``Machine`` (true/false) to the answer URL."""
    body: dict[str, Any] = {
        "from": plivo_number(from_), "to": plivo_number(to), "answer_url": answer_url, "answer_method": "POST",
        "ring_url": status_url, "ring_method": "POST", "hangup_url": status_url, "hangup_method": "POST",
        "ring_timeout": ring_timeout_s}
    if machine_detection:
        body["machine_detection"] = "true"
    fields = {"to": to, "from": from_}
    answer = await _request(settings, "POST", "Call", f"call {to}", fields, body)
    invalid = answer.get("invalid_number") or []
    if plivo_number(to) in [str(n) for n in invalid]:
        raise InvalidRequest("to", to, f"Plivo refused to call {to}: not a valid number")
    request_uuid = answer.get("request_uuid")
    if isinstance(request_uuid, list):  # a call to several destinations answers a list; voxfleet dials one
        request_uuid = request_uuid[0] if request_uuid else None
    if not request_uuid:
        raise CarrierError(f"Plivo did not place the call to {to}: {answer.get('message') or answer}")
    return {"sid": str(request_uuid), "status": "queued"}


async def end(settings: Settings, call_id: str, canceled: bool) -> None:
    """Cancel a call not answered yet (its request, or its call once it rings), or end a live one."""
    quoted = quote(call_id, safe="")
    if canceled:
        try:
            await _request(settings, "DELETE", f"Request/{quoted}", f"cancel call {call_id}", {})
            return
        except CarrierError:  # ringing, the call is known by its CallUUID (the hang-up callback will say)
            pass
    await _request(settings, "DELETE", f"Call/{quoted}", f"end call {call_id}", {})


def transfer_url(settings: Settings, to: str, from_: str | None) -> str:
    """The URL Plivo fetches the transfer's XML from (signed by Plivo, expiring)."""
    if not settings.public_url:
        raise CarrierNotConfigured("transfers of Plivo calls need public_url: Plivo fetches the transfer's "
                                   "<Dial> XML from voxfleet, and cannot be given it inline")
    query = {"to": plivo_number(to), **({"from": plivo_number(from_)} if from_ else {}),
             EXPIRY_PARAM: str(int(time.time()) + TRANSFER_URL_VALID_S)}
    return f"{settings.public_url.rstrip('/')}{TRANSFER_PATH}?{urlencode(query)}"


async def transfer(settings: Settings, call_uuid: str, to: str, from_: str | None) -> None:
    """Hand a live call to `to`: Plivo leaves the call's stream for ``<Dial><Number>to``."""
    body = {"legs": "aleg", "aleg_url": transfer_url(settings, to, from_), "aleg_method": "POST"}
    await _request(settings, "POST", f"Call/{quote(call_uuid, safe='')}", f"transfer call {call_uuid} to {to}",
                   {"to": to}, body)
