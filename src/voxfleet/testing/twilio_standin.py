"""A STAND-IN for Twilio's REST API and its calls (Twilio cannot be reached from here), written
from Twilio's documentation of what it does with an outbound call:

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (HTTP Basic: account sid, auth token;
  form ``To``, ``From``, ``Url``, ``StatusCallback``, ``StatusCallbackEvent``, ``Timeout``,
  ``MachineDetection``) answers ``201`` with the call resource (``sid``, ``status: queued``), or
  ``400`` ``{code, message, status}`` for a number it cannot call (error 21211);
- then it reports the call's progress to ``StatusCallback`` (signed, form-encoded: ``CallSid``,
  ``CallStatus`` initiated / ringing / in-progress / completed / busy / no-answer / failed /
  canceled, ``Direction: outbound-api``, ``SequenceNumber``, ``CallDuration``);
- when the callee answers it asks ``Url`` for TwiML (signed, with ``AnsweredBy`` when machine
  detection is on) and, for ``<Connect><Stream>``, opens the media stream (``TwilioCaller``);
- ``POST .../Calls/{sid}.json`` with ``Status=canceled|completed`` ends the call; with ``Twiml``
  (a transfer's ``<Dial>``) the call leaves its stream (``stop``) and follows the new TwiML.

Each callee number behaves as its ``Callee`` says (answers and talks, is busy, never answers, is
a number that fails, or rings with no report after its ringing). Runs in the caller's event loop
(uvicorn). What every carrier's stand-in does alike is ``carrier_standin``'s; here are Twilio's
routes, errors, auth and signature.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from voxfleet.bench.twilio_caller import TwilioCaller
from voxfleet.testing.carrier_standin import Callee, TwimlCall, TwimlStandIn, parse_dial

__all__ = ["Callee", "PlacedCall", "TwilioStandIn", "parse_dial"]

PlacedCall = TwimlCall


class TwilioStandIn(TwimlStandIn):
    caller: TwilioCaller

    def __init__(self, account_sid: str, auth_token: str, *, invalid: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.account_sid, self.auth_token = account_sid, auth_token
        self.invalid = invalid  # numbers refused with error 21211
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.caller = TwilioCaller("http://unused", auth_token, account_sid=account_sid)

    def _routes(self) -> list[Route]:
        base = f"/2010-04-01/Accounts/{self.account_sid}"
        return [Route(f"{base}/Calls.json", self._create, methods=["POST"]),
                Route(f"{base}/Calls/{{sid}}.json", self._update_request, methods=["POST"])]

    # -- REST -------------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    async def _create(self, request: Request) -> Response:
        form: dict[str, str] = {}
        for key, value in (await request.form()).multi_items():  # StatusCallbackEvent comes once per event
            if isinstance(value, str):
                form[key] = f"{form[key]} {value}" if key in form else value
        self.requests.append(("POST", request.url.path, form))
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        for name in ("To", "From", "Url"):
            if not form.get(name):
                return _error(400, 21201 if name == "To" else 21213, f"No '{name}' number is specified")
        if form["To"] in self.invalid:
            return _error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
        call = TwimlCall("CA" + secrets.token_hex(16), form)
        self._place(call.sid, call, form["To"])
        return JSONResponse(self._resource(call), status_code=201)

    async def _update_request(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.requests.append(("POST", request.url.path, form))
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        call = self.calls.get(request.path_params["sid"])
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        status = form.get("Status")  # canceled ends a call not answered yet; completed any call
        await self._update(call, form.get("Twiml"), status == "completed" or (
            status == "canceled" and call.status in ("queued", "initiated", "ringing")))
        return JSONResponse(self._resource(call))

    def _resource(self, call: TwimlCall) -> dict[str, Any]:
        return {"sid": call.sid, "account_sid": self.account_sid, "to": call.form.get("To"),
                "from": call.form.get("From"), "status": call.status, "direction": "outbound-api",
                "api_version": "2010-04-01"}

    # -- the call ----------------------------------------------------------------------------
    def _params(self, call: TwimlCall, status: str) -> dict[str, str]:
        return {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.form["From"],
                "To": call.form["To"], "Direction": "outbound-api", "CallStatus": status, "ApiVersion": "2010-04-01"}

    def _detects_machine(self, call: TwimlCall) -> bool:
        return bool(call.form.get("MachineDetection"))

    def _signed(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        return {"data": params, "headers": {"X-Twilio-Signature": signature}}


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status)
