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
call that cannot be connected, or rings with no callback at all; answered by a machine when its
``answered_by`` is not ``human``). Runs in the caller's event loop. What every carrier's stand-in
does alike is ``carrier_standin``'s; here are Plivo's routes, errors, auth, signature, statuses.
"""

from __future__ import annotations

import base64
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxfleet.bench.plivo_caller import PlivoCaller, PlivoCallResult, parse_plivo_xml
from voxfleet.testing.carrier_standin import Callee, CarrierStandIn
from voxfleet.testing.carrier_standin import PlacedCall as CarrierCall

__all__ = ["Callee", "PlacedCall", "PlivoStandIn", "parse_dial"]

HANGUP_CAUSE = {"completed": "NORMAL_CLEARING", "busy": "USER_BUSY", "no-answer": "NO_ANSWER",
                "timeout": "RECOVERY_ON_TIMER_EXPIRE", "cancel": "ORIGINATOR_CANCEL", "failed": "UNALLOCATED_NUMBER"}


@dataclass
class PlacedCall(CarrierCall):
    request_uuid: str
    call_uuid: str
    body: dict[str, Any]
    xml: list[str] = field(default_factory=list)  # every XML the call was given
    result: PlivoCallResult | None = None
    transfer_caller_id: str | None = None


class PlivoStandIn(CarrierStandIn[PlacedCall]):
    FINAL = ("completed", "busy", "no-answer", "timeout", "cancel", "failed")
    INITIATED = None  # Plivo's first callback is the ring
    FAILED = "timeout"
    SET_UP_S = 0.2
    SILENT_RING_REPORTED = False

    def __init__(self, auth_id: str, auth_token: str, *, invalid: frozenset[str] = frozenset()) -> None:
        super().__init__()  # callees by destination number and calls by request_uuid, both Plivo's format
        self.auth_id, self.auth_token = auth_id, auth_token
        self.invalid = invalid  # destination numbers (Plivo's format, no "+") refused with 400
        self.requests: list[tuple[str, str, dict[str, Any], int]] = []  # method, path, body, status answered
        self.caller = PlivoCaller("http://unused", auth_token, auth_id=auth_id)

    def _routes(self) -> list[Route]:
        base = f"/v1/Account/{self.auth_id}"
        return [Route(f"{base}/Call/", self._create, methods=["POST"]),
                Route(f"{base}/Call/{{uuid}}/", self._transfer, methods=["POST"]),
                Route(f"{base}/Call/{{uuid}}/", self._hang_up, methods=["DELETE"]),
                Route(f"{base}/Request/{{uuid}}/", self._cancel, methods=["DELETE"])]

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

    async def _reply(self, request: Request, body: dict[str, Any], status: int,
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
            return await self._reply(request, body, 401, {"error": "authentication failed"})
        for name in ("from", "to", "answer_url"):
            if not body.get(name):
                return await self._reply(request, body, 400, {"error": f"{name} parameter is required"})
        if str(body["to"]) in self.invalid:
            return await self._reply(request, body, 400, {"error": f"'{body['to']}' is not a valid phone number."})
        call = PlacedCall(str(uuid.uuid4()), str(uuid.uuid4()), body)
        self._place(call.request_uuid, call, str(body["to"]))
        return await self._reply(request, body, 201, {"message": "call fired", "request_uuid": call.request_uuid})

    async def _cancel(self, request: Request) -> Response:
        call = self.calls.get(request.path_params["uuid"])
        if not self._authorised(request):
            return await self._reply(request, {}, 401, {"error": "authentication failed"})
        if call is None or call.answered_at is not None or call.status in self.FINAL:
            return await self._reply(request, {}, 404, {"error": "not found"})
        call.left_stream.set()
        await self._report(call, "cancel")
        return await self._reply(request, {}, 204, None)

    async def _hang_up(self, request: Request) -> Response:
        call = self.by_call_uuid(request.path_params["uuid"])
        if not self._authorised(request):
            return await self._reply(request, {}, 401, {"error": "authentication failed"})
        if call is None or call.status in self.FINAL or call.transferred_to is not None:
            return await self._reply(request, {}, 404, {"error": "not found"})
        call.left_stream.set()
        await self._report(call, "completed" if call.answered_at is not None else "cancel")
        return await self._reply(request, {}, 204, None)

    async def _transfer(self, request: Request) -> Response:
        body = await self._body(request)
        call = self.by_call_uuid(request.path_params["uuid"])
        if not self._authorised(request):
            return await self._reply(request, body, 401, {"error": "authentication failed"})
        if call is None or call.answered_at is None or call.status in self.FINAL:
            return await self._reply(request, body, 404, {"error": "not found"})
        if body.get("legs") != "aleg" or not body.get("aleg_url"):
            return await self._reply(request, body, 400, {"error": "aleg_url parameter is required for aleg"})
        response = await self._post(call, str(body["aleg_url"]), self._params(call, "in-progress"))
        if response is None or response.status_code != 200:
            return await self._reply(request, body, 400, {"error": "could not fetch aleg_url"})
        call.xml.append(response.text)
        call.transferred_to, call.transfer_caller_id = parse_dial(response.text)
        call.left_stream.set()  # the call leaves its <Stream> for the fetched XML
        return await self._reply(request, body, 202, {"message": "call transferred"})

    # -- the call ----------------------------------------------------------------------------
    def _params(self, call: PlacedCall, status: str) -> dict[str, str]:
        return {"CallUUID": call.call_uuid, "RequestUUID": call.request_uuid, "ALegUUID": call.call_uuid,
                "ALegRequestUUID": call.request_uuid, "From": str(call.body["from"]), "To": str(call.body["to"]),
                "Direction": "outbound" if call.body.get("answer_url") else "inbound", "CallStatus": status}

    def _ring_timeout(self, call: PlacedCall) -> float:
        return float(call.body.get("ring_timeout") or 120)

    def _signed(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        return {"data": params, "headers": self.caller.signed_headers(url, params)}

    async def _callback(self, call: PlacedCall, status: str, final: bool) -> None:
        """The ring callback (ringing) or the hang-up callback (a final status), as Plivo sends them."""
        url = call.body.get("hangup_url" if final else "ring_url")
        if url:
            params = {**self._params(call, status), "Event": "Hangup" if final else "Ring"}
            if final:
                duration = round(time.monotonic() - call.answered_at) if call.answered_at is not None else 0
                params.update({"HangupCause": HANGUP_CAUSE[status], "Duration": str(duration),
                               "BillDuration": str(duration)})
            await self._post(call, str(url), params)

    async def _answer_webhook(self, call: PlacedCall, callee: Callee) -> httpx.Response | None:
        await self._report(call, "in-progress", lost=True)  # answer_url is the only word of it
        params = {**self._params(call, "in-progress"), "Event": "StartApp"}
        if call.body.get("machine_detection"):
            params["Machine"] = "false" if callee.answered_by == "human" else "true"
        return await self._post(call, str(call.body["answer_url"]), params)

    async def _connect(self, call: PlacedCall, callee: Callee, document: str) -> None:
        call.xml.append(document)
        answer = parse_plivo_xml(document)
        if answer.stream_url:
            call.result = await self.caller.stream(answer, call.call_uuid, callee.speech, listen_s=callee.listen_s,
                                                   ended=call.left_stream)


def parse_dial(xml: str) -> tuple[str | None, str | None]:
    """The number a Plivo XML ``<Dial><Number>`` calls, and its ``callerId``."""
    dial = ET.fromstring(xml).find("Dial")
    if dial is None:
        return None, None
    number = dial.find("Number")
    to = (number.text or "").strip() if number is not None else ""
    return to or None, dial.get("callerId")
