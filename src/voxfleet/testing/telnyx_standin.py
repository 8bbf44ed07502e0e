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
a number that fails, or rings with no report at all). Runs in the caller's event loop (uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxfleet.bench.telnyx_caller import LOCAL_ACCOUNT, TelnyxAccount, TelnyxCaller, call_control_id
from voxfleet.bench.twilio_caller import parse_twiml
from voxfleet.testing.twilio_standin import Callee, PlacedCall, parse_dial

__all__ = ["Callee", "PlacedCall", "TelnyxStandIn"]

FINAL = ("completed", "busy", "no-answer", "failed", "canceled")


class TelnyxStandIn:
    def __init__(self, account: TelnyxAccount = LOCAL_ACCOUNT, *, invalid: frozenset[str] = frozenset(),
                 with_call_sid: bool = True) -> None:
        self.account = account
        self.invalid = invalid  # numbers refused with error 10002
        self.with_call_sid = with_call_sid
        self.callees: dict[str, Callee] = {}
        self.calls: dict[str, PlacedCall] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # (method, path, body)
        self.caller = TelnyxCaller("http://unused", account)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, port: int = 0) -> TelnyxStandIn:
        base = f"/v2/texml/Accounts/{self.account.account_sid}/Calls"
        app = Starlette(routes=[Route(base, self._create, methods=["POST"]),
                                Route(f"{base}/{{sid:path}}", self._update, methods=["POST"]),
                                Route("/v2/calls/{sid:path}/actions/hangup", self._hangup, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                     lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        for task in list(self._calls):
            task.cancel()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

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
        call = PlacedCall(call_control_id(), form)
        self.calls[call.sid] = call
        task = asyncio.create_task(self._progress(call, self.callees.get(form["To"], Callee())))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        answer = {"from": form["From"], "to": form["To"], "status": "queued"}
        return JSONResponse({**({"call_sid": call.sid} if self.with_call_sid else {}), **answer})

    async def _update(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(("POST", request.url.path, form))
        if not self._authorised(request):
            return _error(401, "10009", "Authentication failed", "Invalid API key.")
        call = self.calls.get(request.path_params["sid"])
        if call is None:
            return _error(404, "10005", "Resource not found", "The requested resource or URL could not be found.")
        if "Texml" in form:
            call.twiml.append(form["Texml"])
            dial = parse_dial(form["Texml"])
            if dial is not None:
                call.transferred_to = dial
            call.left_stream.set()  # the call leaves its <Connect><Stream> for the new TeXML
        elif form.get("Status") == "completed":
            call.left_stream.set()
            await self._report(call, "canceled" if call.answered_at is None else "completed")
        return JSONResponse(self._resource(call))

    async def _hangup(self, request: Request) -> Response:
        self.requests.append(("POST", request.url.path, {}))
        if not self._authorised(request):
            return _error(401, "10009", "Authentication failed", "Invalid API key.")
        call = self.calls.get(request.path_params["sid"])
        if call is None or call.status in FINAL:
            return _error(422, "90018", "Call has already ended", "This call is no longer active.")
        call.left_stream.set()
        await self._report(call, "completed")
        return JSONResponse({"data": {"result": "ok"}})

    def _resource(self, call: PlacedCall) -> dict[str, Any]:
        return {"account_sid": self.account.account_sid, "sid": call.sid, "from": call.form.get("From"),
                "to": call.form.get("To"), "status": call.status, "direction": "outbound",
                "uri": f"/v2/texml/Accounts/{self.account.account_sid}/Calls/{call.sid}.json"}

    # -- the call ----------------------------------------------------------------------------
    def _params(self, call: PlacedCall, status: str) -> dict[str, str]:
        return {"AccountSid": self.account.account_sid, "CallSid": call.sid, "CallSidLegacy": call.sid,
                "CallStatus": status, "ConnectionId": call.form.get("ApplicationSid", ""),
                "Direction": "outbound-api", "From": call.form["From"], "To": call.form["To"]}

    async def _report(self, call: PlacedCall, status: str) -> None:
        """A status callback, as Telnyx sends it for the events the call asked for (final ones always)."""
        if call.status in FINAL:
            return
        call.status = status
        call.events.append(status)
        asked = set(call.form.get("StatusCallbackEvent", "").split())
        event = {"in-progress": "answered"}.get(status, status)
        final = status in FINAL
        url = call.form.get("StatusCallback")
        if url and (event in asked or final):
            params = {**self._params(call, status), "CallbackSource": "call-progress-events",
                      "SequenceNumber": str(len(call.events) - 1),
                      "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if final and call.answered_at is not None:
                params["CallDuration"] = str(round(time.monotonic() - call.answered_at))
            await self._post(call, url, params)
        if final:
            call.done.set()

    async def _post(self, call: PlacedCall, url: str, params: dict[str, str]) -> httpx.Response | None:
        body, headers = self.caller.signed(params)
        try:
            async with httpx.AsyncClient(timeout=15) as http:
                response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            call.callback_errors.append(f"{url}: {exc}")
            return None
        if response.status_code >= 300:
            call.callback_errors.append(f"{url}: HTTP {response.status_code} {response.text[:200]}")
        return response

    async def _progress(self, call: PlacedCall, callee: Callee) -> None:
        await self._report(call, "initiated")
        if callee.behaviour == "failed":
            await self._report(call, "failed")
            return
        await self._report(call, "ringing")
        if callee.behaviour == "busy":
            await asyncio.sleep(callee.ring_s)
            await self._report(call, "busy")
            return
        if callee.behaviour in ("no-answer", "silent"):
            timeout = float(call.form.get("Timeout") or 30)
            try:
                await asyncio.wait_for(call.left_stream.wait(), timeout)  # canceled while it rang
            except asyncio.TimeoutError:
                if callee.behaviour == "no-answer":
                    await self._report(call, "no-answer")
            return
        try:
            await asyncio.wait_for(call.left_stream.wait(), callee.ring_s)
            return  # canceled while it rang
        except asyncio.TimeoutError:
            pass
        await self._answer(call, callee)

    async def _answer(self, call: PlacedCall, callee: Callee) -> None:
        call.answered_at = time.monotonic()
        params = self._params(call, "in-progress")
        if call.form.get("MachineDetection") in ("Enable", "DetectMessageEnd"):
            params["AnsweredBy"] = callee.answered_by
        response = await self._post(call, call.form["Url"], params)
        await self._report(call, "in-progress")
        if response is None or response.status_code != 200:
            await self._report(call, "completed")  # Telnyx plays its application error and hangs up
            return
        call.twiml.append(response.text)
        answer = parse_twiml(response.text)
        if answer.stream_url:
            call.result = await self.caller.stream(answer, call.sid, callee.speech, listen_s=callee.listen_s,
                                                   after_greeting=True, ended=call.left_stream)
        if call.transferred_to is None:
            await self._report(call, "completed")
        else:
            call.done.set()  # the call goes on, with the number it was handed to

    def inbound(self, call_sid: str, from_: str, to: str) -> PlacedCall:
        """A call TO the account's number (its TeXML webhook is the test's to send): known here so
        that REST updates of it (a transfer) reach it."""
        call = PlacedCall(call_sid, {"From": from_, "To": to}, status="in-progress", answered_at=time.monotonic())
        self.calls[call_sid] = call
        return call

    async def wait(self, sid: str, timeout: float = 30.0) -> PlacedCall:
        call = self.calls[sid]
        await asyncio.wait_for(call.done.wait(), timeout)
        return call


def _error(status: int, code: str, title: str, detail: str, pointer: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "title": title, "detail": detail,
                             "meta": {"url": f"https://developers.telnyx.com/docs/overview/errors/{code}"}}
    if pointer:
        error["source"] = {"pointer": pointer}
    return JSONResponse({"errors": [error]}, status_code=status)
