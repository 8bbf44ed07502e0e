"""What the carrier STAND-INS (``twilio_standin``, ``telnyx_standin``, ``plivo_standin``) share:
each plays one carrier's REST API and the calls it places (no carrier can be reached from here),
and each carrier's module keeps what is its own (routes and their formats, auth, signing, status
names, how a call is answered and streamed). Here:

- ``Callee``: how a called number behaves (answers and talks, is busy, never answers, is a number
  that fails, or rings for ever with nothing reported after its ring);
- ``PlacedCall``: what the stand-in knows of every call (its statuses, answer, transfer, the
  callbacks that failed); ``TwimlCall`` adds a TwiML call's sid, request and TwiML;
- ``CarrierStandIn``: the server (uvicorn, in the caller's event loop, bound to the port asked or
  0), the calls' tasks (kept, cancelled on ``stop``), ``wait``, a call's progress (set up ->
  ringing -> answered / busy / no-answer / failed), and the signed callback POST that records
  what went wrong; ``TwimlStandIn`` the status callbacks, answer webhook and REST updates that
  Telnyx's TeXML copies from Twilio.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from voxfleet.bench.twilio_caller import CallResult, TwimlAnswer, parse_twiml


@dataclass
class Callee:
    """How the called number behaves: ``answer`` (after `ring_s`, then says `speech`; answered by
    `answered_by` for machine detection), ``busy``, ``no-answer`` (rings until the call's ring
    timeout), ``failed`` (a number the carrier cannot connect), or ``silent`` (rings for ever and
    nothing is reported after its ring: the carrier's callbacks lost)."""

    behaviour: str = "answer"
    ring_s: float = 0.2
    speech: list[np.ndarray] = field(default_factory=list)
    listen_s: float = 8.0
    answered_by: str = "human"


@dataclass(kw_only=True)
class PlacedCall:
    """A call the stand-in placed (or was told of: an inbound one), as every carrier's has it."""

    events: list[str] = field(default_factory=list)  # the carrier's statuses, in order
    status: str = "queued"
    answered_at: float | None = None  # monotonic
    transferred_to: str | None = None
    callback_errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    left_stream: asyncio.Event = field(default_factory=asyncio.Event)
    created_at: float = field(default_factory=time.monotonic)


@dataclass
class TwimlCall(PlacedCall):
    """A call of a TwiML carrier (Twilio, Telnyx's TeXML): its sid and the request that placed it."""

    sid: str
    form: dict[str, str]
    twiml: list[str] = field(default_factory=list)  # every TwiML the call was given
    result: CallResult | None = None


CallT = TypeVar("CallT", bound=PlacedCall)


class CarrierStandIn(Generic[CallT]):
    """One carrier's REST API and its calls; a subclass names its routes, statuses and callbacks."""

    FINAL: tuple[str, ...] = ("completed", "busy", "no-answer", "failed", "canceled")
    INITIATED: str | None = "initiated"  # the first status reported, or None when the carrier has none
    FAILED = "failed"  # the status of a number that cannot be connected
    SET_UP_S = 0.0  # how long the carrier takes to set a call up
    SILENT_RING_REPORTED = True  # False: a silent callee's call reports nothing at all

    def __init__(self) -> None:
        self.callees: dict[str, Callee] = {}
        self.calls: dict[str, CallT] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self.url = ""

    # -- what a carrier's module says -------------------------------------------------------
    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _signed(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        """The keyword arguments of the callback's ``httpx`` POST: its form and signature."""
        raise NotImplementedError

    def _ring_timeout(self, call: CallT) -> float:
        raise NotImplementedError

    async def _callback(self, call: CallT, status: str, final: bool) -> None:
        """Tell the application of `status` (the call's status already is it), as the carrier does."""
        raise NotImplementedError

    async def _answer_webhook(self, call: CallT, callee: Callee) -> httpx.Response | None:
        """The callee answered: ask the application what to do (its response, None if it failed)."""
        raise NotImplementedError

    async def _connect(self, call: CallT, callee: Callee, document: str) -> None:
        """Follow the document the answer webhook gave (open its media stream, if it has one)."""
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, port: int = 0) -> Self:
        config = uvicorn.Config(Starlette(routes=self._routes()), host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
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

    async def wait(self, key: str, timeout: float = 30.0) -> CallT:
        """The call (by the id its dial was answered with) once it is over for the stand-in."""
        call = self.calls[key]
        await asyncio.wait_for(call.done.wait(), timeout)
        return call

    # -- the call ----------------------------------------------------------------------------
    def _place(self, key: str, call: CallT, to: str) -> None:
        """Known by `key` from now on, the call to `to` progresses as its callee behaves."""
        self.calls[key] = call
        task = asyncio.create_task(self._progress(call, self.callees.get(to, Callee())))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _report(self, call: CallT, status: str, *, lost: bool = False) -> None:
        """The call's status is now `status` (unless it already ended), reported unless `lost`."""
        if call.status in self.FINAL:
            return
        call.status = status
        call.events.append(status)
        final = status in self.FINAL
        if not lost:
            await self._callback(call, status, final)
        if final:
            call.done.set()

    async def _post(self, call: CallT, url: str, params: dict[str, str]) -> httpx.Response | None:
        """A signed callback; what went wrong with it (no answer, an error status) is recorded."""
        try:
            async with httpx.AsyncClient(timeout=15) as http:
                response = await http.post(url, **self._signed(url, params))
        except httpx.HTTPError as exc:
            call.callback_errors.append(f"{url}: {exc}")
            return None
        if response.status_code >= 300:
            call.callback_errors.append(f"{url}: HTTP {response.status_code} {response.text[:200]}")
        return response

    async def _progress(self, call: CallT, callee: Callee) -> None:
        await asyncio.sleep(self.SET_UP_S)
        if self.INITIATED is not None:
            await self._report(call, self.INITIATED)
        if callee.behaviour == "failed":
            await self._report(call, self.FAILED)
            return
        silent = callee.behaviour == "silent"
        await self._report(call, "ringing", lost=silent and not self.SILENT_RING_REPORTED)
        if callee.behaviour == "busy":
            await asyncio.sleep(callee.ring_s)
            await self._report(call, "busy")
            return
        if callee.behaviour in ("no-answer", "silent"):
            try:
                await asyncio.wait_for(call.left_stream.wait(), self._ring_timeout(call))  # canceled while it rang
            except asyncio.TimeoutError:
                if not silent:
                    await self._report(call, "no-answer")
            return
        try:
            await asyncio.wait_for(call.left_stream.wait(), callee.ring_s)
            return  # canceled while it rang
        except asyncio.TimeoutError:
            pass
        await self._answer(call, callee)

    async def _answer(self, call: CallT, callee: Callee) -> None:
        call.answered_at = time.monotonic()
        response = await self._answer_webhook(call, callee)
        if response is None or response.status_code != 200:
            await self._report(call, "completed")  # the carrier plays its application error and hangs up
            return
        await self._connect(call, callee, response.text)
        if call.transferred_to is None:
            await self._report(call, "completed")
        else:
            call.done.set()  # the call goes on, with the number it was handed to


class TwimlCaller(Protocol):
    async def stream(self, answer: TwimlAnswer, call_sid: str, speech: list[np.ndarray], *, listen_s: float = ...,
                     after_greeting: bool = ..., ended: asyncio.Event | None = ...) -> CallResult: ...


class TwimlStandIn(CarrierStandIn[TwimlCall]):
    """A TwiML carrier: status callbacks for the events a call asked for (``StatusCallbackEvent``;
    final ones always), the answer webhook ``Url``, REST updates with new TwiML or an end."""

    caller: TwimlCaller
    RING_TIMEOUT_S = 60.0  # when the call gives no ``Timeout``
    TIMESTAMP = "%a, %d %b %Y %H:%M:%S +0000"  # of a status callback, in UTC

    def _params(self, call: TwimlCall, status: str) -> dict[str, str]:
        raise NotImplementedError

    def _detects_machine(self, call: TwimlCall) -> bool:
        raise NotImplementedError

    def _ring_timeout(self, call: TwimlCall) -> float:
        return float(call.form.get("Timeout") or self.RING_TIMEOUT_S)

    async def _callback(self, call: TwimlCall, status: str, final: bool) -> None:
        asked = set(call.form.get("StatusCallbackEvent", "").split())
        event = {"in-progress": "answered"}.get(status, status)
        url = call.form.get("StatusCallback")
        if url and (event in asked or final):
            params = {**self._params(call, status), "CallbackSource": "call-progress-events",
                      "SequenceNumber": str(len(call.events) - 1),
                      "Timestamp": time.strftime(self.TIMESTAMP, time.gmtime())}
            if final and call.answered_at is not None:
                params["CallDuration"] = str(round(time.monotonic() - call.answered_at))
            await self._post(call, url, params)

    async def _answer_webhook(self, call: TwimlCall, callee: Callee) -> httpx.Response | None:
        params = self._params(call, "in-progress")
        if self._detects_machine(call):
            params["AnsweredBy"] = callee.answered_by
        response = await self._post(call, call.form["Url"], params)
        await self._report(call, "in-progress")
        return response

    async def _connect(self, call: TwimlCall, callee: Callee, document: str) -> None:
        call.twiml.append(document)
        answer = parse_twiml(document)
        if answer.stream_url:
            call.result = await self.caller.stream(answer, call.sid, callee.speech, listen_s=callee.listen_s,
                                                   after_greeting=True, ended=call.left_stream)

    async def _update(self, call: TwimlCall, twiml: str | None, end: bool) -> None:
        """A REST update: new TwiML (a transfer's ``<Dial>``: the call leaves its ``<Connect><Stream>``
        for it), or the end of the call (canceled if it was not answered yet)."""
        if twiml is not None:
            call.twiml.append(twiml)
            dial = parse_dial(twiml)
            if dial is not None:
                call.transferred_to = dial
            call.left_stream.set()
        elif end:
            call.left_stream.set()
            await self._report(call, "canceled" if call.answered_at is None else "completed")

    def inbound(self, sid: str, from_: str, to: str) -> TwimlCall:
        """An inbound call (its webhooks are the test's to send), known here so that REST updates
        of it (a transfer) reach it: pass its ``left_stream`` as the stream's ``ended``."""
        call = self.calls[sid] = TwimlCall(sid, {"From": from_, "To": to}, status="in-progress",
                                           answered_at=time.monotonic())
        return call


def parse_dial(twiml: str) -> str | None:
    """The number a TwiML ``<Dial>`` calls (``<Dial>+1555...</Dial>`` or ``<Dial><Number>``)."""
    dial = ET.fromstring(twiml).find("Dial")
    if dial is None:
        return None
    number = dial.find("Number")
    return ((number.text if number is not None else dial.text) or "").strip() or None
