"""A phone call as Plivo places it, written from Plivo's documentation: the answer-URL request
(form-encoded POST with CallUUID, From, To, Direction, CallStatus; signed with
X-Plivo-Signature-V3, X-Plivo-Signature-Ma-V3 and X-Plivo-Signature-V3-Nonce), Plivo XML
(``<Stream>``, ``<Speak>``, ``<Wait>``, ``<Redirect>``, ``<Hangup>``) and the Audio Stream
protocol: ``start`` as soon as the socket opens (``extra_headers`` from the ``<Stream>``), then
``media`` with base64 8 kHz mu-law every 20 ms; ``playAudio`` played, ``checkpoint`` answered
with ``playedStream``, ``clearAudio`` with ``clearedAudio``. A caller hangs up by closing the
socket (Plivo sends no stop message). When the stream ends with the call still up,
``keepCallAlive`` makes Plivo run the XML element after ``<Stream>``: the caller follows it.

Used by the tests and by ``voxfleet bench phone --provider plivo``. It knows nothing of voxfleet
beyond URLs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import websockets

from voxfleet.bench.conversation import Pacer, converse, until_left
from voxfleet.bench.twilio_caller import SILENCE, WebhookRefused
from voxfleet.transports.twilio_media import is_speech, pcm16_to_ulaw, ulaw_to_pcm16

ACCOUNT = "MA" + "B" * 18  # a Plivo Auth ID's shape


def v3_signature(auth_token: str, method: str, url: str, params: dict[str, str], nonce: str) -> str:
    """X-Plivo-Signature-V3: HMAC-SHA256 (key: the auth token) of the URL and the nonce joined by
    ``.``, base64. The URL is the scheme, host and path, then ``?`` and its query parameters
    sorted by name and value (``k=v`` joined by ``&``); a POST appends its parameters sorted by
    name as ``kv`` pairs (after a ``.`` when the URL has a query). A GET's parameters are in the
    query."""
    parts = urlsplit(url)
    query = {k: list(v) for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if method.upper() == "GET":
        for key, value in params.items():
            query.setdefault(key, []).append(value)
    sorted_query = "&".join(f"{key}={value}" for key in sorted(query) for value in sorted(query[key]))
    message = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if method.upper() == "GET":
        message += f"?{sorted_query}" if sorted_query else ""
    else:
        if sorted_query or params:
            message += f"?{sorted_query}"
        if sorted_query and params:
            message += "."
        message += "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), f"{message}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass
class PlivoAnswer:
    """What the answer URL (or a redirect) told Plivo to do."""

    xml: str
    stream_url: str | None = None
    stream: dict[str, str] = field(default_factory=dict)  # the <Stream>'s attributes
    redirect: str | None = None  # the <Redirect> (after a <Stream>: run once the stream has ended)
    speaks: list[str] = field(default_factory=list)
    wait_s: float = 0.0
    hangup: bool = False

    @property
    def extra_headers(self) -> str:
        return self.stream.get("extraHeaders", "")

    @property
    def session(self) -> str | None:
        """The voxfleet session the stream's after-stream redirect names (``?session=``)."""
        if not self.redirect:
            return None
        sessions = parse_qs(urlsplit(self.redirect).query).get("session")
        return sessions[0] if sessions else None


def parse_plivo_xml(text: str) -> PlivoAnswer:
    root = ET.fromstring(text)
    if root.tag != "Response":
        raise ValueError(f"Plivo XML root must be <Response>, got <{root.tag}>")
    answer = PlivoAnswer(xml=text)
    for element in root:
        if element.tag == "Stream":
            answer.stream_url = (element.text or "").strip()
            answer.stream = dict(element.attrib)
        elif element.tag == "Speak":
            answer.speaks.append(element.text or "")
        elif element.tag == "Wait":
            answer.wait_s += float(element.get("length", "1"))
        elif element.tag == "Redirect":
            answer.redirect = (element.text or "").strip()
        elif element.tag == "Hangup":
            answer.hangup = True
    return answer


@dataclass
class PlivoCallResult:
    answers: list[PlivoAnswer]
    ttfw_ms: float | None = None  # start sent -> first non-silent playAudio received
    audio: bytearray = field(default_factory=bytearray)  # every received mu-law byte, in order
    speech_at: list[float] = field(default_factory=list)  # arrival (s since start) of non-silent audio
    frames_in: int = 0
    clears: int = 0
    checkpoints: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_at: float | None = None  # s since start when the stream closed
    hung_up: bool = False  # the caller hung up (closed the socket)
    left_stream: bool = False  # the call left the stream (a transfer): Plivo closed it and ran other XML
    after: PlivoAnswer | None = None  # what the redirect after <Stream> answered once the stream ended
    after_error: str | None = None
    v2v_ms: list[float] = field(default_factory=list)  # end of each utterance -> the bot's first audio after it

    def pcm16(self) -> np.ndarray:
        return ulaw_to_pcm16(bytes(self.audio))


class PlivoCaller:
    def __init__(self, base_url: str, auth_token: str, *, auth_id: str = ACCOUNT) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.auth_id = auth_id

    def signed_headers(self, url: str, params: dict[str, str], *, nonce: str | None = None,
                       signature: str | None = None) -> dict[str, str]:
        """Plivo's signature headers for a POST of `params` to `url` (V3 and Ma-V3: the same here,
        where the account is a main account)."""
        nonce = nonce or str(secrets.randbelow(10**20)).zfill(20)
        sig = signature if signature is not None else v3_signature(self.auth_token, "POST", url, params, nonce)
        return {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-Ma-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}

    async def post(self, url: str, params: dict[str, str], **signing: Any) -> PlivoAnswer:
        async with httpx.AsyncClient(timeout=15) as http:
            response = await http.post(url, data=params, headers=self.signed_headers(url, params, **signing))
        if response.status_code != 200:
            raise WebhookRefused(response.status_code, response.text)
        return parse_plivo_xml(response.text)

    def call_params(self, call_uuid: str, from_: str = "14155550006", status: str = "ringing") -> dict[str, str]:
        """The parameters Plivo sends with every request of a voice call."""
        return {"CallUUID": call_uuid, "From": from_, "To": "14155550001", "Direction": "inbound",
                "CallStatus": status}

    async def dial(self, agent: str, *, call_uuid: str | None = None, from_: str = "14155550006",
                   max_redirects: int = 30) -> tuple[str, list[PlivoAnswer]]:
        """Request the answer URL, then follow ``<Redirect>``s (after their ``<Speak>``/``<Wait>``)
        until the XML starts a stream or hangs up. Returns the call's UUID and every answer."""
        call_uuid = call_uuid or str(uuid.uuid4())
        params = self.call_params(call_uuid, from_)
        url = f"{self.base_url}/v1/telephony/plivo/{agent}"
        answers: list[PlivoAnswer] = []
        for _ in range(max_redirects):
            answer = await self.post(url, params)
            answers.append(answer)
            if answer.stream_url or answer.hangup or not answer.redirect:
                break
            await asyncio.sleep(answer.wait_s)
            url = answer.redirect
            params = self.call_params(call_uuid, from_, status="in-progress")
        return call_uuid, answers

    async def stream(self, answer: PlivoAnswer, call_uuid: str, speech: list[np.ndarray], *,
                     listen_s: float = 20.0, after_greeting: bool = True, hang_up: bool = True,
                     start_overrides: dict[str, Any] | None = None,
                     ended: asyncio.Event | None = None) -> PlivoCallResult:
        """Open the XML's stream as Plivo does and hold a conversation: wait for the greeting,
        then say each utterance (8 kHz int16) in real time, streaming silence otherwise; listen
        for the bot's answers; hang up (close the socket) unless `hang_up` is False. When
        `ended` is set the call has left the stream (a transfer): Plivo closes the socket at
        once and runs no XML after the ``<Stream>``."""
        assert answer.stream_url, "the XML has no <Stream>"
        stream_id = str(uuid.uuid4())
        result = PlivoCallResult(answers=[answer])
        extra = {"extra_headers": answer.extra_headers} if answer.extra_headers else {}
        async with websockets.connect(answer.stream_url, max_size=2**20) as ws:
            start = {"callId": call_uuid, "streamId": stream_id, "accountId": self.auth_id, "tracks": ["inbound"],
                     "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
            start.update(start_overrides or {})
            await ws.send(json.dumps({"event": "start", "sequenceNumber": 1, "start": start, **extra}))
            started = time.monotonic()
            frames = _Frames(ws, stream_id, extra)
            listener = asyncio.create_task(self._listen(ws, frames, result, started))
            try:
                conversation = asyncio.create_task(converse(
                    Pacer(frames.media), [pcm16_to_ulaw(s) for s in speech], SILENCE, result.speech_at, started,
                    listen_s=listen_s, after_greeting=after_greeting))
                result.v2v_ms, result.left_stream = await until_left(conversation, ended)
                if result.left_stream:
                    await ws.close()
                elif hang_up:
                    result.hung_up = True
                    await ws.close()
                await asyncio.wait_for(asyncio.shield(listener), 5)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass
            finally:
                listener.cancel()
            result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
            result.closed_at = result.closed_at or time.monotonic() - started
        if not result.hung_up and not result.left_stream and answer.redirect:
            try:  # keepCallAlive: the stream is over, the call is not; Plivo runs the next element
                result.after = await self.post(answer.redirect, self.call_params(call_uuid, status="in-progress"))
            except (httpx.HTTPError, WebhookRefused) as exc:
                result.after_error = f"{type(exc).__name__}: {exc}"
        return result

    async def _listen(self, ws: Any, frames: _Frames, result: PlivoCallResult, started: float) -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                event = message.get("event")
                if event == "playAudio":
                    media = message["media"]
                    audio = base64.b64decode(media["payload"])
                    if str(media.get("contentType", "audio/x-mulaw")).startswith("audio/x-l16"):
                        audio = pcm16_to_ulaw(np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2"))
                    result.frames_in += 1
                    result.audio.extend(audio)
                    if is_speech(audio):
                        at = time.monotonic() - started
                        if result.ttfw_ms is None:
                            result.ttfw_ms = round(at * 1000, 1)
                        result.speech_at.append(at)
                elif event == "checkpoint":  # acknowledged once the audio before it has played
                    result.checkpoints += 1
                    await frames.send({"event": "playedStream", "streamId": frames.stream_id,
                                       "name": message.get("name", "")})
                elif event == "clearAudio":
                    result.clears += 1
                    await frames.send({"event": "clearedAudio", "streamId": frames.stream_id})
        finally:
            result.closed_at = time.monotonic() - started


class _Frames:
    """The caller's messages on one stream, numbered as Plivo numbers them (start was 1)."""

    def __init__(self, ws: Any, stream_id: str, extra: dict[str, str]) -> None:
        self.ws, self.stream_id, self.extra = ws, stream_id, extra
        self.seq, self.chunk = 1, 0

    async def send(self, message: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({**message, "sequenceNumber": self.seq}))

    async def media(self, payload: bytes) -> None:
        self.chunk += 1
        await self.send({"event": "media", "streamId": self.stream_id,
                         "media": {"track": "inbound", "timestamp": str(int(time.time() * 1000)), "chunk": self.chunk,
                                   "payload": base64.b64encode(payload).decode()}, **self.extra})
