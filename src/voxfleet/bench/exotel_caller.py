"""A phone call as Exotel places it through an App Bazaar flow, written from Exotel's public
documentation (AgentStream: the Voicebot applet, its WebSocket protocol, the Passthru and
Greeting applets): nothing here knows voxfleet beyond the URLs an operator types into the flow.

- Voicebot applet, dynamic URL: a GET with the call's parameters (CallSid, CallFrom, CallTo,
  Direction, ...) to an ``https://KEY:TOKEN@host/...`` URL (credentials sent as Basic auth),
  answered ``{"url": "wss://..."}``; Exotel then opens that WebSocket (its user-info sent as
  Basic auth too) and speaks the stream protocol: ``connected``, ``start`` (the URL's query
  parameters as ``custom_parameters``), ``media`` (base64 16-bit PCM, 8 kHz mono, a chunk
  every 100 ms), ``mark`` echoed once the audio before it has played, ``stop`` when the caller
  hangs up. Every number is a JSON string.
- When the stream ends with the caller still on the line, the flow goes on: Passthru (a GET;
  200 and 302 pick its two branches), Greeting with its text from a URL (HEAD, then GET,
  ``text/plain``, read out by Exotel's TTS), Hangup, or back to the Voicebot applet.

Used by the tests and by ``voxfleet bench phone --provider exotel``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
import numpy as np
import websockets

from voxfleet.bench.conversation import Pacer, converse
from voxfleet.bench.twilio_caller import WebhookRefused, sid
from voxfleet.transports.exotel_media import CHUNK_BYTES, CHUNK_MS, is_speech, pcm16

SILENCE = b"\x00" * CHUNK_BYTES  # 100 ms of 16-bit silence, as Exotel sends a silent caller


@dataclass
class ExotelFlow:
    """The URLs of a call flow's applets, as an operator sets them in App Bazaar:
    Voicebot -> Passthru `ended` (200 -> Passthru `hold`, 302 -> Greeting `say` -> Passthru `hold`);
    Passthru `hold`: 200 -> back to the Voicebot applet, 302 -> Hangup."""

    voicebot: str
    ended: str
    say: str
    hold: str

    @classmethod
    def for_agent(cls, base_url: str, agent: str, query: str = "") -> ExotelFlow:
        root = f"{base_url.rstrip('/')}/v1/telephony/exotel/{agent}"
        return cls(voicebot=root + (f"?{query}" if query else ""), ended=f"{root}/ended", say=f"{root}/say",
                   hold=f"{root}/hold")


@dataclass
class StreamResult:
    """One Voicebot applet's stream, as the caller heard it."""

    url: str
    ttfw_ms: float | None = None  # start sent -> first non-silent media received
    audio: bytearray = field(default_factory=bytearray)  # every received PCM byte, in order
    speech_at: list[float] = field(default_factory=list)  # arrival (s since start) of non-silent chunks
    frames_in: int = 0
    clears: int = 0
    marks: int = 0
    close_code: int | None = None
    close_reason: str = ""
    stopped_by_caller: bool = False  # the caller hung up (sent stop)
    v2v_ms: list[float] = field(default_factory=list)  # end of each utterance -> the bot's first audio after it

    def pcm16(self) -> np.ndarray:
        return pcm16(bytes(self.audio))

    def hear(self, audio: bytes, at: float) -> None:
        self.frames_in += 1
        self.audio.extend(audio)
        if is_speech(audio):
            if self.ttfw_ms is None:
                self.ttfw_ms = round(at * 1000, 1)
            self.speech_at.append(at)


@dataclass
class CallResult:
    """A whole call: its streams (one per visit of the Voicebot applet), what the Greeting
    applet said after them, and how the flow ended."""

    call_sid: str
    streams: list[StreamResult] = field(default_factory=list)
    says: list[str] = field(default_factory=list)
    hung_up_by_flow: bool = False  # the flow reached its Hangup applet (not the caller)

    @property
    def last(self) -> StreamResult:
        return self.streams[-1]


class ExotelCaller:
    def __init__(self, base_url: str, api_key: str, api_token: str, *, account_sid: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key, self.api_token = api_key, api_token
        self.account_sid = account_sid or sid("AC")

    def with_credentials(self, url: str) -> str:
        """`url` with the applet's user-info, as an operator writes it: scheme://KEY:TOKEN@host/..."""
        parts = urlsplit(url)
        netloc = f"{quote(self.api_key, safe='')}:{quote(self.api_token, safe='')}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc))

    def flow(self, agent: str, query: str = "") -> ExotelFlow:
        return ExotelFlow.for_agent(self.with_credentials(self.base_url), agent, query)

    def call_params(self, call_sid: str, from_: str, status: str = "in-progress") -> dict[str, str]:
        """The call parameters Exotel's applets send with their requests."""
        return {"CallSid": call_sid, "CallFrom": from_, "CallTo": "08047491899", "From": from_, "To": "08047491899",
                "Direction": "incoming", "CallStatus": status, "Created": time.strftime("%Y-%m-%d %H:%M:%S")}

    async def voicebot_url(self, flow: ExotelFlow, call_sid: str, from_: str = "+919876543210") -> str:
        """The Voicebot applet's dynamic URL: ask it for the stream's wss:// URL."""
        async with httpx.AsyncClient(timeout=15) as http:
            response = await http.get(flow.voicebot, params=self.call_params(call_sid, from_))
        if response.status_code != 200:
            raise WebhookRefused(response.status_code, response.text)
        url = response.json().get("url")
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ValueError(f"the dynamic URL must answer {{\"url\": \"wss://...\"}}, got {response.text[:200]}")
        return url

    async def dial(self, agent: str, *, call_sid: str | None = None) -> tuple[str, list[str]]:
        """A new call reaching the Voicebot applet: (its CallSid, [the stream URL it was given])."""
        call_sid = call_sid or sid("CA")
        return call_sid, [await self.voicebot_url(self.flow(agent), call_sid)]

    async def call(self, agent: str, speech: list[np.ndarray], *, call_sid: str | None = None,
                   from_: str = "+919876543210", listen_s: float = 20.0, after_greeting: bool = True,
                   hang_up: bool = True, max_visits: int = 40, flow: ExotelFlow | None = None) -> CallResult:
        """A whole call through the flow: the Voicebot applet's stream (greeting, each utterance
        in real time, the answers; the caller hangs up at the end when `hang_up`), and, when the
        stream ends with the caller still on the line, the applets after it, back to the
        Voicebot applet as often as the flow says."""
        flow = flow or self.flow(agent)
        result = CallResult(call_sid or sid("CA"))
        for _ in range(max_visits):
            url = await self.voicebot_url(flow, result.call_sid, from_)
            stream = await self.stream(url, result.call_sid, speech, listen_s=listen_s,
                                       after_greeting=after_greeting, hang_up=hang_up, from_=from_)
            result.streams.append(stream)
            if stream.stopped_by_caller or not await self.after_stream(flow, result, stream, from_):
                return result
        return result

    async def after_stream(self, flow: ExotelFlow, result: CallResult, stream: StreamResult, from_: str) -> bool:
        """The applets after the Voicebot applet. True: the flow goes back to the Voicebot applet."""
        params = self.call_params(result.call_sid, from_)
        params.update({"Stream[StreamSID]": sid("MZ"), "Stream[Status]": "completed",
                       "Stream[StreamUrl]": stream.url.split("?")[0], "Stream[DisconnectedBy]": "bot"})
        async with httpx.AsyncClient(timeout=60) as http:
            ended = await http.get(flow.ended, params=params)
            if ended.status_code not in (200, 302):
                raise WebhookRefused(ended.status_code, ended.text)
            if ended.status_code == 302:  # the Greeting applet, its text from a URL
                greeting = {k: params[k] for k in ("CallSid", "From", "To")}
                head = await http.head(flow.say, params=greeting)
                text = await http.get(flow.say, params=greeting)
                if text.status_code != 200 or text.headers.get("content-type") != "text/plain" \
                        or head.headers.get("content-type") != "text/plain":
                    raise WebhookRefused(text.status_code, f"Greeting text must be text/plain: {text.headers}")
                result.says.append(text.text)
            hold = await http.get(flow.hold, params=params)
        if hold.status_code == 200:
            return True
        if hold.status_code != 302:
            raise WebhookRefused(hold.status_code, hold.text)
        result.hung_up_by_flow = True
        return False

    async def stream(self, url: str, call_sid: str, speech: list[np.ndarray], *, listen_s: float = 20.0,
                     after_greeting: bool = True, hang_up: bool = True, from_: str = "+919876543210",
                     start_overrides: dict[str, Any] | None = None) -> StreamResult:
        """Open the stream as Exotel does and hold a conversation: wait for the greeting, say each
        utterance (8 kHz int16) in real time, silence otherwise; hang up (stop) at the end."""
        stream_sid = sid("MZ")
        result = StreamResult(url=url)
        custom = dict(parse_qsl(urlsplit(url).query))  # the URL's query parameters, as Exotel passes them on
        async with websockets.connect(url, max_size=2**20) as ws:
            frames = _Frames(ws, stream_sid)
            try:
                await ws.send(json.dumps({"event": "connected"}))
                start = {"stream_sid": stream_sid, "call_sid": call_sid, "account_sid": self.account_sid,
                         "from": from_, "to": "08047491899", "custom_parameters": custom,
                         "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}
                start.update(start_overrides or {})
                await frames.send_event("start", start)
                started = time.monotonic()
                listener = asyncio.create_task(self._listen(ws, result, started, frames))
                try:
                    utterances = [s.astype("<i2").tobytes() for s in speech]
                    result.v2v_ms = await converse(Pacer(frames.media, CHUNK_MS / 1000), utterances, SILENCE,
                                                   result.speech_at, started, listen_s=listen_s,
                                                   after_greeting=after_greeting)
                    if hang_up:
                        result.stopped_by_caller = True
                        await frames.send_event("stop", {"call_sid": call_sid, "account_sid": self.account_sid,
                                                         "reason": "callended"})
                    await asyncio.wait_for(asyncio.shield(listener), 5)
                finally:
                    listener.cancel()
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass
            result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
        return result

    async def _listen(self, ws: Any, result: StreamResult, started: float, frames: _Frames) -> None:
        async for raw in ws:
            message = json.loads(raw)
            event = message.get("event")
            if event == "media":
                result.hear(base64.b64decode(message["media"]["payload"]), time.monotonic() - started)
            elif event == "mark":  # Exotel sends a mark back once the audio before it has played
                result.marks += 1
                await frames.send_event("mark", {"name": message.get("mark", {}).get("name", "")})
            elif event == "clear":
                result.clears += 1


class _Frames:
    """The stream's outbound messages, numbered as Exotel numbers them."""

    def __init__(self, ws: Any, stream_sid: str) -> None:
        self.ws, self.stream_sid = ws, stream_sid
        self.sequence, self.chunk = 0, 0

    async def send_event(self, event: str, body: dict[str, Any]) -> None:
        self.sequence += 1
        await self.ws.send(json.dumps({"event": event, "sequence_number": str(self.sequence),
                                       "stream_sid": self.stream_sid, event: body}))

    async def media(self, payload: bytes) -> None:
        self.chunk += 1
        await self.send_event("media", {"chunk": str(self.chunk), "timestamp": str(self.chunk * CHUNK_MS),
                                        "payload": base64.b64encode(payload).decode()})
