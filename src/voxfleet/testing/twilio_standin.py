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
a number that fails, or rings with no report at all). Runs in the caller's event loop (uvicorn).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from voxfleet.bench.twilio_caller import CallResult, TwilioCaller, parse_twiml


@dataclass
class Callee:
    """How the called number behaves: ``answer`` (after `ring_s`, then says `speech`), ``busy``,
    ``no-answer`` (rings until the call's Timeout), ``failed``, or ``silent`` (rings for ever and
    reports nothing: a status callback lost)."""

    behaviour: str = "answer"
    ring_s: float = 0.2
    speech: list[np.ndarray] = field(default_factory=list)
    listen_s: float = 8.0
    answered_by: str = "human"


@dataclass
class PlacedCall:
    sid: str
    form: dict[str, str]
    events: list[str] = field(default_factory=list)  # CallStatus values reported, in order
    status: str = "queued"
    twiml: list[str] = field(default_factory=list)  # every TwiML the call was given
    answered_at: float | None = None  # monotonic
    result: CallResult | None = None
    transferred_to: str | None = None
    callback_errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    left_stream: asyncio.Event = field(default_factory=asyncio.Event)
    created_at: float = field(default_factory=time.monotonic)


class TwilioStandIn:
    def __init__(self, account_sid: str, auth_token: str, *, invalid: frozenset[str] = frozenset()) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.invalid = invalid  # numbers refused with error 21211
        self.callees: dict[str, Callee] = {}
        self.calls: dict[str, PlacedCall] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.caller = TwilioCaller("http://unused", auth_token, account_sid=account_sid)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, port: int = 0) -> "TwilioStandIn":
        base = f"/2010-04-01/Accounts/{self.account_sid}"
        app = Starlette(routes=[Route(f"{base}/Calls.json", self._create, methods=["POST"]),
                                Route(f"{base}/Calls/{{sid}}.json", self._update, methods=["POST"])])
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
        call = PlacedCall("CA" + secrets.token_hex(16), form)
        self.calls[call.sid] = call
        task = asyncio.create_task(self._progress(call, self.callees.get(form["To"], Callee())))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return JSONResponse(self._resource(call), status_code=201)

    async def _update(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.requests.append(("POST", request.url.path, form))
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        call = self.calls.get(request.path_params["sid"])
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        if "Twiml" in form:
            call.twiml.append(form["Twiml"])
            dial = parse_dial(form["Twiml"])
            if dial is not None:
                call.transferred_to = dial
            call.left_stream.set()  # the call leaves its <Connect><Stream> for the new TwiML
        elif form.get("Status") in ("canceled", "completed"):
            if call.status in ("queued", "initiated", "ringing") or form["Status"] == "completed":
                call.left_stream.set()
                await self._report(call, "canceled" if call.answered_at is None else "completed")
        return JSONResponse(self._resource(call))

    def _resource(self, call: PlacedCall) -> dict[str, Any]:
        return {"sid": call.sid, "account_sid": self.account_sid, "to": call.form.get("To"),
                "from": call.form.get("From"), "status": call.status, "direction": "outbound-api",
                "api_version": "2010-04-01"}

    # -- the call ----------------------------------------------------------------------------
    def _params(self, call: PlacedCall, status: str) -> dict[str, str]:
        return {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.form["From"],
                "To": call.form["To"], "Direction": "outbound-api", "CallStatus": status, "ApiVersion": "2010-04-01"}

    async def _report(self, call: PlacedCall, status: str) -> None:
        """A status callback, as Twilio sends it for the events the call asked for (final ones always)."""
        if call.status in ("completed", "busy", "no-answer", "failed", "canceled"):
            return
        call.status = status
        call.events.append(status)
        asked = set(call.form.get("StatusCallbackEvent", "").split())
        event = {"in-progress": "answered"}.get(status, status)
        final = status in ("completed", "busy", "no-answer", "failed", "canceled")
        url = call.form.get("StatusCallback")
        if url and (event in asked or final):
            params = {**self._params(call, status), "SequenceNumber": str(len(call.events) - 1),
                      "CallbackSource": "call-progress-events", "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000")}
            if final and call.answered_at is not None:
                params["CallDuration"] = str(round(time.monotonic() - call.answered_at))
            await self._post(call, url, params)
        if final:
            call.done.set()

    async def _post(self, call: PlacedCall, url: str, params: dict[str, str]) -> httpx.Response | None:
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        try:
            async with httpx.AsyncClient(timeout=15) as http:
                response = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
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
            timeout = float(call.form.get("Timeout") or 60)
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
        if call.form.get("MachineDetection"):
            params["AnsweredBy"] = callee.answered_by
        response = await self._post(call, call.form["Url"], params)
        await self._report(call, "in-progress")
        if response is None or response.status_code != 200:
            await self._report(call, "completed")  # Twilio plays its application error and hangs up
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

    def inbound(self, sid: str, from_: str, to: str) -> PlacedCall:
        """An inbound call (placed by ``TwilioCaller``) that REST updates may then act on."""
        call = self.calls[sid] = PlacedCall(sid, {"From": from_, "To": to}, status="in-progress")
        call.answered_at = time.monotonic()
        return call

    async def wait(self, sid: str, timeout: float = 30.0) -> PlacedCall:
        call = self.calls[sid]
        await asyncio.wait_for(call.done.wait(), timeout)
        return call


def parse_dial(twiml: str) -> str | None:
    """The number a TwiML ``<Dial>`` calls (``<Dial>+1555...</Dial>`` or ``<Dial><Number>``)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(twiml)
    dial = root.find("Dial")
    if dial is None:
        return None
    number = dial.find("Number")
    return ((number.text if number is not None else dial.text) or "").strip() or None


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status)
