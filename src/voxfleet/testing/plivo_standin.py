"""A STAND-IN for Plivo's Voice REST API and its calls (Plivo cannot be reached from here),
written from Plivo's documentation of what it does with an outbound call ("Make an outbound
call", "Hang up a call", "Cancel a queued call", "Transfer a call", "XML request" / call status)
and the requests its Python SDK makes (``plivo.resources.calls``):

- ``POST /v1/Account/{auth_id}/Call/`` (HTTP Basic: auth id, auth token; JSON ``from``, ``to``,
  ``answer_url``, ``ring_url``, ``hangup_url``, ``ring_timeout``, ``machine_detection``) answers
  ``201 {message: "call fired", request_uuid, api_id}``, or ``400 {api_id, error}`` naming a
  number it cannot call;
- the call then rings (``ring_url``: ``CallStatus=ringing``), and when the callee answers Plivo
  asks ``answer_url`` for XML (``CallStatus=in-progress``; ``Machine`` true/false with machine
  detection) and, for a ``<Stream>``, opens the audio stream (``PlivoCaller``); when it ends,
  ``hangup_url`` gets ``CallStatus`` completed / busy / no-answer / timeout / cancel with
  ``HangupCause`` and ``Duration``. Every callback is form-encoded, signed (V3), and carries
  ``CallUUID``, ``RequestUUID``, ``From``, ``To``, ``Direction: outbound``;
- ``DELETE .../Request/{request_uuid}/`` cancels a call not answered yet (204; 404 once it is);
  ``DELETE .../Call/{call_uuid}/`` hangs up a ringing or live call (204; 404 once it is over);
- ``POST .../Call/{call_uuid}/ {legs: aleg, aleg_url}`` (202): the call leaves its stream and runs
  the XML fetched from ``aleg_url`` (a ``<Dial><Number>``).

Each callee number behaves as its ``Callee`` says (answers and talks, is busy, never answers, a
call that cannot be connected, or rings with no callback at all). Runs in the caller's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxfleet.bench.plivo_caller import PlivoCaller, PlivoCallResult, parse_plivo_xml

FINAL = ("completed", "busy", "no-answer", "timeout", "cancel", "failed")
HANGUP_CAUSE = {"completed": "NORMAL_CLEARING", "busy": "USER_BUSY", "no-answer": "NO_ANSWER",
                "timeout": "RECOVERY_ON_TIMER_EXPIRE", "cancel": "ORIGINATOR_CANCEL", "failed": "UNALLOCATED_NUMBER"}


@dataclass
class Callee:
    """How the called number behaves: ``answer`` (after `ring_s`, then says `speech`), ``busy``,
    ``no-answer`` (rings until the call's ring_timeout), ``failed`` (cannot be connected: Plivo's
    ``timeout``), or ``silent`` (rings for ever and no callback arrives: callbacks lost)."""

    behaviour: str = "answer"
    ring_s: float = 0.2
    speech: list[np.ndarray] = field(default_factory=list)
    listen_s: float = 8.0
    machine: bool = False


@dataclass
class PlacedCall:
    request_uuid: str
    call_uuid: str
    body: dict[str, Any]
    events: list[str] = field(default_factory=list)  # CallStatus values reported, in order
    status: str = "queued"
    xml: list[str] = field(default_factory=list)  # every XML the call was given
    answered_at: float | None = None  # monotonic
    result: PlivoCallResult | None = None
    transferred_to: str | None = None
    transfer_caller_id: str | None = None
    callback_errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    left_stream: asyncio.Event = field(default_factory=asyncio.Event)


class PlivoStandIn:
    def __init__(self, auth_id: str, auth_token: str, *, invalid: frozenset[str] = frozenset()) -> None:
        self.auth_id, self.auth_token = auth_id, auth_token
        self.invalid = invalid  # destination numbers (Plivo's format, no "+") refused with 400
        self.callees: dict[str, Callee] = {}  # by destination number, Plivo's format
        self.calls: dict[str, PlacedCall] = {}  # by request_uuid
        self.requests: list[tuple[str, str, dict[str, Any], int]] = []  # method, path, body, status answered
        self.caller = PlivoCaller("http://unused", auth_token, auth_id=auth_id)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, port: int = 0) -> "PlivoStandIn":
        base = f"/v1/Account/{self.auth_id}"
        app = Starlette(routes=[
            Route(f"{base}/Call/", self._create, methods=["POST"]),
            Route(f"{base}/Call/{{uuid}}/", self._transfer, methods=["POST"]),
            Route(f"{base}/Call/{{uuid}}/", self._hang_up, methods=["DELETE"]),
            Route(f"{base}/Request/{{uuid}}/", self._cancel, methods=["DELETE"])])
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

    def inbound_call(self, call_uuid: str, from_: str, to: str) -> PlacedCall:
        """A call Plivo received (answered, its stream opened by a ``PlivoCaller``), so that its
        transfer and hang-up reach it: pass the result's ``left_stream`` as the stream's ``ended``."""
        call = PlacedCall(str(uuid.uuid4()), call_uuid, {"from": from_, "to": to}, events=["in-progress"],
                          status="in-progress", answered_at=time.monotonic())
        self.calls[call.request_uuid] = call
        return call

    def by_call_uuid(self, call_uuid: str) -> PlacedCall | None:
        return next((c for c in self.calls.values() if c.call_uuid == call_uuid and c.events), None)

    # -- REST -------------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    async def _answer(self, request: Request, body: dict[str, Any], status: int,
                      content: dict[str, Any] | None) -> Response:
        self.requests.append((request.method, request.url.path, body, status))
        if content is None:
            return Response(status_code=status)
        return JSONResponse({"api_id": str(uuid.uuid4()), **content}, status_code=status)

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = await request.json()
        except ValueError:
            return {"_unparsed": raw.decode(errors="replace")}
        return body if isinstance(body, dict) else {"_unparsed": body}

    async def _create(self, request: Request) -> Response:
        body = await self._body(request)
        if not self._authorised(request):
            return await self._answer(request, body, 401, {"error": "authentication failed"})
        for name in ("from", "to", "answer_url"):
            if not body.get(name):
                return await self._answer(request, body, 400, {"error": f"{name} parameter is required"})
        if str(body["to"]) in self.invalid:
            return await self._answer(request, body, 400, {"error": f"'{body['to']}' is not a valid phone number."})
        call = PlacedCall(str(uuid.uuid4()), str(uuid.uuid4()), body)
        self.calls[call.request_uuid] = call
        task = asyncio.create_task(self._progress(call, self.callees.get(str(body["to"]), Callee())))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return await self._answer(request, body, 201, {"message": "call fired", "request_uuid": call.request_uuid})

    async def _cancel(self, request: Request) -> Response:
        call = self.calls.get(request.path_params["uuid"])
        if not self._authorised(request):
            return await self._answer(request, {}, 401, {"error": "authentication failed"})
        if call is None or call.answered_at is not None or call.status in FINAL:
            return await self._answer(request, {}, 404, {"error": "not found"})
        call.left_stream.set()
        await self._report(call, "cancel")
        return await self._answer(request, {}, 204, None)

    async def _hang_up(self, request: Request) -> Response:
        call = self.by_call_uuid(request.path_params["uuid"])
        if not self._authorised(request):
            return await self._answer(request, {}, 401, {"error": "authentication failed"})
        if call is None or call.status in FINAL or call.transferred_to is not None:
            return await self._answer(request, {}, 404, {"error": "not found"})
        call.left_stream.set()
        await self._report(call, "completed" if call.answered_at is not None else "cancel")
        return await self._answer(request, {}, 204, None)

    async def _transfer(self, request: Request) -> Response:
        body = await self._body(request)
        call = self.by_call_uuid(request.path_params["uuid"])
        if not self._authorised(request):
            return await self._answer(request, body, 401, {"error": "authentication failed"})
        if call is None or call.answered_at is None or call.status in FINAL:
            return await self._answer(request, body, 404, {"error": "not found"})
        if body.get("legs") != "aleg" or not body.get("aleg_url"):
            return await self._answer(request, body, 400, {"error": "aleg_url parameter is required for aleg"})
        response = await self._post(call, str(body["aleg_url"]), self._params(call, "in-progress"))
        if response is None or response.status_code != 200:
            return await self._answer(request, body, 400, {"error": "could not fetch aleg_url"})
        call.xml.append(response.text)
        call.transferred_to, call.transfer_caller_id = parse_dial(response.text)
        call.left_stream.set()  # the call leaves its <Stream> for the fetched XML
        return await self._answer(request, body, 202, {"message": "call transferred"})

    # -- the call ----------------------------------------------------------------------------
    def _params(self, call: PlacedCall, status: str) -> dict[str, str]:
        return {"CallUUID": call.call_uuid, "RequestUUID": call.request_uuid, "ALegUUID": call.call_uuid,
                "ALegRequestUUID": call.request_uuid, "From": str(call.body["from"]), "To": str(call.body["to"]),
                "Direction": "outbound" if call.body.get("answer_url") else "inbound", "CallStatus": status}

    async def _report(self, call: PlacedCall, status: str, *, lost: bool = False) -> None:
        """The ring callback (ringing) or the hang-up callback (a final status), as Plivo sends them."""
        if call.status in FINAL:
            return
        call.status = status
        call.events.append(status)
        final = status in FINAL
        url = call.body.get("hangup_url" if final else "ring_url")
        if url and not lost:
            params = {**self._params(call, status), "Event": "Hangup" if final else "Ring"}
            if final:
                duration = round(time.monotonic() - call.answered_at) if call.answered_at is not None else 0
                params.update({"HangupCause": HANGUP_CAUSE[status], "Duration": str(duration),
                               "BillDuration": str(duration)})
            await self._post(call, str(url), params)
        if final:
            call.done.set()

    async def _post(self, call: PlacedCall, url: str, params: dict[str, str]) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=15) as http:
                response = await http.post(url, data=params, headers=self.caller.signed_headers(url, params))
        except httpx.HTTPError as exc:
            call.callback_errors.append(f"{url}: {exc}")
            return None
        if response.status_code >= 300:
            call.callback_errors.append(f"{url}: HTTP {response.status_code} {response.text[:200]}")
        return response

    async def _progress(self, call: PlacedCall, callee: Callee) -> None:
        if callee.behaviour == "failed":
            await asyncio.sleep(0.05)
            await self._report(call, "timeout")
            return
        lost = callee.behaviour == "silent"
        await asyncio.sleep(0.2)  # the carrier sets the call up
        await self._report(call, "ringing", lost=lost)
        if callee.behaviour == "busy":
            await asyncio.sleep(callee.ring_s)
            await self._report(call, "busy")
            return
        if callee.behaviour in ("no-answer", "silent"):
            timeout = float(call.body.get("ring_timeout") or 120)
            try:
                await asyncio.wait_for(call.left_stream.wait(), timeout)  # canceled while it rang
            except asyncio.TimeoutError:
                await self._report(call, "no-answer", lost=lost)
            return
        try:
            await asyncio.wait_for(call.left_stream.wait(), callee.ring_s)
            return  # canceled while it rang
        except asyncio.TimeoutError:
            pass
        await self._answered(call, callee)

    async def _answered(self, call: PlacedCall, callee: Callee) -> None:
        call.answered_at = time.monotonic()
        call.status = "in-progress"
        call.events.append("in-progress")
        params = self._params(call, "in-progress")
        params["Event"] = "StartApp"
        if call.body.get("machine_detection"):
            params["Machine"] = "true" if callee.machine else "false"
        response = await self._post(call, str(call.body["answer_url"]), params)
        if response is None or response.status_code != 200:
            await self._report(call, "completed")  # Plivo tries fallback_url (none here) and hangs up
            return
        call.xml.append(response.text)
        answer = parse_plivo_xml(response.text)
        if answer.stream_url:
            call.result = await self.caller.stream(answer, call.call_uuid, callee.speech, listen_s=callee.listen_s,
                                                   ended=call.left_stream)
        if call.transferred_to is None:
            await self._report(call, "completed")
        else:
            call.done.set()  # the call goes on, with the number it was handed to

    async def wait(self, request_uuid: str, timeout: float = 30.0) -> PlacedCall:
        call = self.calls[request_uuid]
        await asyncio.wait_for(call.done.wait(), timeout)
        return call


def parse_dial(xml: str) -> tuple[str | None, str | None]:
    """The number a Plivo XML ``<Dial><Number>`` calls, and its ``callerId``."""
    dial = ET.fromstring(xml).find("Dial")
    if dial is None:
        return None, None
    number = dial.find("Number")
    to = (number.text or "").strip() if number is not None else ""
    return to or None, dial.get("callerId")
