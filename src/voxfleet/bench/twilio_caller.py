"""A phone call as Twilio places it, written from Twilio's documented formats: the signed voice
webhook (form-encoded, X-Twilio-Signature), TwiML (<Connect><Stream>, <Say>, <Pause>,
<Redirect>, <Hangup>) and the Media Streams protocol (``connected``, ``start``, ``media`` with
base64 8 kHz mu-law every 20 ms, ``mark`` echoed back, ``stop``).

Used by the tests and by ``voxfleet bench phone``. It knows nothing of voxfleet beyond URLs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets
from twilio.request_validator import RequestValidator

from voxfleet.bench.conversation import Pacer, converse, until_left
from voxfleet.transports.twilio_media import FRAME_BYTES, is_speech, pcm16_to_ulaw, ulaw_to_pcm16

SILENCE = b"\xff" * FRAME_BYTES  # mu-law digital silence, 20 ms


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class TwimlAnswer:
    """What the webhook told Twilio to do."""

    xml: str
    stream_url: str | None = None
    connect_action: str | None = None  # <Connect action>: asked when the stream ends
    parameters: dict[str, str] = field(default_factory=dict)
    says: list[str] = field(default_factory=list)
    redirect: str | None = None
    pause_s: float = 0.0
    hangup: bool = False


def parse_twiml(text: str) -> TwimlAnswer:
    root = ET.fromstring(text)
    if root.tag != "Response":
        raise ValueError(f"TwiML root must be <Response>, got <{root.tag}>")
    answer = TwimlAnswer(xml=text)
    for verb in root:
        if verb.tag == "Connect":
            stream = verb.find("Stream")
            answer.connect_action = verb.get("action")
            if stream is not None:
                answer.stream_url = stream.get("url")
                answer.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        elif verb.tag == "Say":
            answer.says.append(verb.text or "")
        elif verb.tag == "Pause":
            answer.pause_s += float(verb.get("length", "1"))
        elif verb.tag == "Redirect":
            answer.redirect = (verb.text or "").strip()
        elif verb.tag == "Hangup":
            answer.hangup = True
    return answer


@dataclass
class CallResult:
    twiml: list[TwimlAnswer]
    ttfw_ms: float | None = None  # start sent -> first non-silent media received
    audio: bytearray = field(default_factory=bytearray)  # every received mu-law byte, in order
    speech_at: list[float] = field(default_factory=list)  # arrival (s since start) of non-silent frames
    frames_in: int = 0
    clears: int = 0
    marks: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_at: float | None = None  # s since start when the stream closed
    stopped_by_caller: bool = False  # the caller sent stop (hung up)
    after: TwimlAnswer | None = None  # what <Connect action> answered once the stream ended
    after_error: str | None = None  # the action URL could not be asked (Twilio then plays its application error)
    v2v_ms: list[float] = field(default_factory=list)  # end of each utterance -> the bot's first audio after it
    started_at: float | None = None  # time.monotonic() when start was sent (the clock of the times above)

    def pcm16(self) -> np.ndarray:
        return ulaw_to_pcm16(bytes(self.audio))

    def hear(self, audio: bytes, at: float) -> None:
        """A frame of the bot's mu-law audio arrived, `at` s after the stream's start."""
        self.frames_in += 1
        self.audio.extend(audio)
        if is_speech(audio):
            if self.ttfw_ms is None:
                self.ttfw_ms = round(at * 1000, 1)
            self.speech_at.append(at)


class TwilioCaller:
    def __init__(self, base_url: str, auth_token: str, *, account_sid: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or sid("AC")

    async def dial(self, agent: str, *, call_sid: str | None = None, from_: str = "+15005550006",
                   max_redirects: int = 30, signature: str | None = None) -> tuple[str, list[TwimlAnswer]]:
        """Post the voice webhook and follow <Redirect>s until TwiML connects a stream or hangs up.
        Returns the call sid and every TwiML answer."""
        call_sid = call_sid or sid("CA")
        params = self.call_params(call_sid, from_)
        url = f"{self.base_url}/v1/telephony/twilio/{agent}"
        answers: list[TwimlAnswer] = []
        async with httpx.AsyncClient(timeout=15) as http:
            for _ in range(max_redirects):
                sig = signature if signature is not None else RequestValidator(self.auth_token).compute_signature(url, params)
                response = await http.post(url, data=params, headers={"X-Twilio-Signature": sig})
                if response.status_code != 200:
                    raise WebhookRefused(response.status_code, response.text)
                answer = parse_twiml(response.text)
                answers.append(answer)
                if answer.stream_url or answer.hangup or not answer.redirect:
                    return call_sid, answers
                await asyncio.sleep(answer.pause_s)
                url = answer.redirect
                params["CallStatus"] = "in-progress"
        return call_sid, answers

    def call_params(self, call_sid: str, from_: str = "+15005550006", status: str = "ringing") -> dict[str, str]:
        """Twilio's standard request parameters of a call's webhooks."""
        return {"CallSid": call_sid, "AccountSid": self.account_sid, "From": from_, "To": "+15005550001",
                "Direction": "inbound", "CallStatus": status, "ApiVersion": "2010-04-01"}

    async def stream_ended(self, answer: TwimlAnswer, call_sid: str) -> TwimlAnswer | None:
        """As Twilio does when a <Connect>'s stream ends with the call still up: request its
        ``action`` URL (signed, POST) for what to do next."""
        if not answer.connect_action:
            return None
        params = self.call_params(call_sid, status="in-progress")
        sig = RequestValidator(self.auth_token).compute_signature(answer.connect_action, params)
        async with httpx.AsyncClient(timeout=15) as http:
            response = await http.post(answer.connect_action, data=params, headers={"X-Twilio-Signature": sig})
        if response.status_code != 200:
            raise WebhookRefused(response.status_code, response.text)
        return parse_twiml(response.text)

    async def stream(self, answer: TwimlAnswer, call_sid: str, speech: list[np.ndarray], *,
                     listen_s: float = 20.0, after_greeting: bool = True, send_stop: bool = True,
                     start_overrides: dict[str, Any] | None = None,
                     ended: asyncio.Event | None = None) -> CallResult:
        """Open the TwiML's stream as Twilio does and hold a conversation: wait for the greeting,
        then say each utterance (8 kHz int16) in real time, streaming silence otherwise; listen
        for the bot's answers; end with ``stop`` (at once when `ended` is set: the call left the
        stream, as a REST update or a transfer does)."""
        assert answer.stream_url, "TwiML has no <Stream>"
        stream_sid = sid("MZ")
        result = CallResult(twiml=[answer])
        async with websockets.connect(answer.stream_url, max_size=2**20) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {"accountSid": self.account_sid, "streamSid": stream_sid, "callSid": call_sid,
                     "tracks": ["inbound"], "customParameters": dict(answer.parameters),
                     "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
            start.update(start_overrides or {})
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start,
                                      "streamSid": stream_sid}))
            started = result.started_at = time.monotonic()
            listener = asyncio.create_task(self._listen(ws, result, started, stream_sid))
            try:
                frames = _MediaFrames(ws, stream_sid)
                conversation = asyncio.create_task(converse(
                    Pacer(frames.send), [pcm16_to_ulaw(s) for s in speech], SILENCE, result.speech_at, started,
                    listen_s=listen_s, after_greeting=after_greeting))
                result.v2v_ms, call_left = await until_left(conversation, ended)
                if send_stop or call_left:
                    result.stopped_by_caller = True
                    await ws.send(json.dumps({"event": "stop", "sequenceNumber": "9999", "streamSid": stream_sid,
                                              "stop": {"accountSid": self.account_sid, "callSid": call_sid}}))
                await asyncio.wait_for(asyncio.shield(listener), 5)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass
            finally:
                listener.cancel()
            result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
            result.closed_at = result.closed_at or time.monotonic() - started
        if not result.stopped_by_caller:
            try:
                result.after = await self.stream_ended(answer, call_sid)
            except (httpx.HTTPError, WebhookRefused) as exc:  # e.g. the server is down: the call ends in an error
                result.after_error = f"{type(exc).__name__}: {exc}"
        return result

    async def _listen(self, ws: Any, result: CallResult, started: float, stream_sid: str) -> None:
        try:
            await self._frames(ws, result, started, stream_sid)
        finally:
            result.closed_at = time.monotonic() - started

    async def _frames(self, ws: Any, result: CallResult, started: float, stream_sid: str) -> None:
        async for raw in ws:
            message = json.loads(raw)
            event = message.get("event")
            if event == "media":
                result.hear(base64.b64decode(message["media"]["payload"]), time.monotonic() - started)
            elif event == "mark":  # Twilio echoes a mark once the audio before it has played
                result.marks += 1
                await ws.send(json.dumps({"event": "mark", "streamSid": stream_sid, "mark": message.get("mark", {})}))
            elif event == "clear":
                result.clears += 1


class _MediaFrames:
    def __init__(self, ws: Any, stream_sid: str) -> None:
        self.ws, self.stream_sid = ws, stream_sid
        self.seq, self.chunk = 2, 0

    async def send(self, payload: bytes) -> None:
        self.chunk += 1
        await self.ws.send(json.dumps({"event": "media", "sequenceNumber": str(self.seq), "streamSid": self.stream_sid,
                                       "media": {"track": "inbound", "chunk": str(self.chunk),
                                                 "timestamp": str(self.chunk * 20),
                                                 "payload": base64.b64encode(payload).decode()}}))
        self.seq += 1


class WebhookRefused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"webhook answered {status}: {body}")
        self.status = status
        self.body = body
