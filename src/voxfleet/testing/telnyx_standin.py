"""A STAND-IN for Telnyx's TeXML REST API and the calls it places (Telnyx cannot be reached from
here), written from Telnyx's documentation (developers.telnyx.com: TeXML REST Commands "Initiate
an outbound call" and "Update call", TeXML Instruction Fetching, the TeXML call callbacks
texml-call-initiated / -ringing / -answered / -completed, Call Control's hangup):

- ``POST /v2/texml/Accounts/{account_sid}/Calls`` (Bearer API key; JSON ``ApplicationSid``,
  ``To``, ``From``, ``Url``, ``StatusCallback``, ``StatusCallbackEvent``, ``Timeout``,
  ``MachineDetection``) answers ``200`` ``{call_sid, from, to, status: queued}`` (the account-scoped
  reference lists from/to/status; its connection-scoped and AI-call siblings add ``call_sid``, the
  call's call_control_id: ``with_call_sid=False`` leaves it out), or ``422`` ``{errors: [{code,
  title, detail, source: {pointer}}]}`` for a number it cannot call (error 10002, ``/To``);
- then it reports the call's progress to ``StatusCallback`` (form-encoded, Ed25519-signed as every
  Telnyx webhook: ``CallSid``, ``CallStatus`` initiated / ringing / in-progress / completed / busy /
  no-answer / failed / canceled, ``CallbackSource: call-progress-events``, ``SequenceNumber``,
  ``Timestamp``, ``CallDuration``);
- when the callee answers it asks ``Url`` for TeXML (signed, with ``AnsweredBy`` when machine
  detection is on) and, for ``<Connect><Stream>``, opens the media stream (``TelnyxCaller``; once
  the stream stops with the call up, it follows the TeXML's ``<Redirect>``);
- ``POST .../Calls/{call_sid}`` (form) with ``Status=completed`` ends the call (ringing: canceled);
  with ``Texml`` (a transfer's ``<Dial>``) the call leaves its stream (``stop``) for the new TeXML;
- ``POST /v2/calls/{call_control_id}/actions/hangup`` (Call Control) hangs a live call up.

Each callee number behaves as its ``Callee`` says (answers and talks, is busy, never answers, is
a number that fails, or rings with no report after its ringing). Runs in the caller's event loop
(uvicorn). What every carrier's stand-in does alike (TeXML's callbacks and updates are Twilio's)
is ``carrier_standin``'s; here are Telnyx's routes, errors, auth and signature.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxfleet.bench.telnyx_caller import LOCAL_ACCOUNT, TelnyxAccount, TelnyxCaller, call_control_id
from voxfleet.testing.carrier_standin import Callee, TwimlCall, TwimlStandIn

__all__ = ["Callee", "PlacedCall", "TelnyxStandIn"]

PlacedCall = TwimlCall


class TelnyxStandIn(TwimlStandIn):
    caller: TelnyxCaller
    RING_TIMEOUT_S = 30.0
    TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"

    def __init__(self, account: TelnyxAccount = LOCAL_ACCOUNT, *, invalid: frozenset[str] = frozenset(),
                 with_call_sid: bool = True) -> None:
        super().__init__()
        self.account = account
        self.invalid = invalid  # numbers refused with error 10002
        self.with_call_sid = with_call_sid
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # (method, path, body)
        self.caller = TelnyxCaller("http://unused", account)

    def _routes(self) -> list[Route]:
        base = f"/v2/texml/Accounts/{self.account.account_sid}/Calls"
        return [Route(base, self._create, methods=["POST"]),
                Route(f"{base}/{{sid:path}}", self._update_request, methods=["POST"]),
                Route("/v2/calls/{sid:path}/actions/hangup", self._hangup, methods=["POST"])]

    # -- REST -------------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.account.api_key}"

    async def _create(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        self.requests.append(("POST", request.url.path, body if isinstance(body, dict) else {}))
        if not self._authorised(request):
            return _error(401, "10009", "Authentication failed", "The required authentication headers were "
                          "either invalid or not included in the request.")
        if not isinstance(body, dict):
            return _error(400, "10015", "Bad Request", "The request failed because it was not well-formed.")
        for name in ("ApplicationSid", "To", "From"):
            if not body.get(name):
                return _error(422, "10004", "Missing required parameter", f"The '{name}' parameter is required.",
                              f"/{name}")
        if body["To"] in self.invalid:
            return _error(422, "10002", "Invalid phone number", f"The phone number {body['To']} is invalid.", "/To")
        form = {k: str(v) for k, v in body.items()}
        call = TwimlCall(call_control_id(), form)
        self._place(call.sid, call, form["To"])
        answer = {"from": form["From"], "to": form["To"], "status": "queued"}
        return JSONResponse({**({"call_sid": call.sid} if self.with_call_sid else {}), **answer})

    async def _update_request(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(("POST", request.url.path, form))
        if not self._authorised(request):
            return _error(401, "10009", "Authentication failed", "Invalid API key.")
        call = self.calls.get(request.path_params["sid"])
        if call is None:
            return _error(404, "10005", "Resource not found", "The requested resource or URL could not be found.")
        await self._update(call, form.get("Texml"), form.get("Status") == "completed")
        return JSONResponse(self._resource(call))

    async def _hangup(self, request: Request) -> Response:
        self.requests.append(("POST", request.url.path, {}))
        if not self._authorised(request):
            return _error(401, "10009", "Authentication failed", "Invalid API key.")
        call = self.calls.get(request.path_params["sid"])
        if call is None or call.status in self.FINAL:
            return _error(422, "90018", "Call has already ended", "This call is no longer active.")
        call.left_stream.set()
        await self._report(call, "completed")
        return JSONResponse({"data": {"result": "ok"}})

    def _resource(self, call: TwimlCall) -> dict[str, Any]:
        return {"account_sid": self.account.account_sid, "sid": call.sid, "from": call.form.get("From"),
                "to": call.form.get("To"), "status": call.status, "direction": "outbound",
                "uri": f"/v2/texml/Accounts/{self.account.account_sid}/Calls/{call.sid}.json"}

    # -- the call ----------------------------------------------------------------------------
    def _params(self, call: TwimlCall, status: str) -> dict[str, str]:
        return {"AccountSid": self.account.account_sid, "CallSid": call.sid, "CallSidLegacy": call.sid,
                "CallStatus": status, "ConnectionId": call.form.get("ApplicationSid", ""),
                "Direction": "outbound-api", "From": call.form["From"], "To": call.form["To"]}

    def _detects_machine(self, call: TwimlCall) -> bool:
        return call.form.get("MachineDetection") in ("Enable", "DetectMessageEnd")

    def _signed(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        body, headers = self.caller.signed(params)
        return {"content": body, "headers": headers}


def _error(status: int, code: str, title: str, detail: str, pointer: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "title": title, "detail": detail,
                             "meta": {"url": f"https://developers.telnyx.com/docs/overview/errors/{code}"}}
    if pointer:
        error["source"] = {"pointer": pointer}
    return JSONResponse({"errors": [error]}, status_code=status)
