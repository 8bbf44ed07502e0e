"""A phone call as Telnyx places it through a TeXML application, written from Telnyx's documented
formats: the voice webhook (form-encoded, TwiML's field names; ``telnyx-signature-ed25519`` is
the account's Ed25519 signature of ``{telnyx-timestamp}|{body}``), TeXML (TwiML's dialect:
``<Connect><Stream bidirectionalMode="rtp">`` with ``<Parameter>``s, and the verbs after
``<Connect>`` run once the stream has stopped; ``<Say>``, ``<Pause>``, ``<Redirect>``,
``<Hangup>``) and Media Streaming (``connected``, ``start`` with ``stream_id`` and
``start.custom_parameters``, ``media`` with base64 8 kHz PCMU every 20 ms, marks echoed back,
``stop``). In Telnyx's default bidirectional mode (mp3) the bot's RTP payloads are not played:
a stream answered without ``bidirectionalMode="rtp"`` is heard as silence, as on a real call.

Used by the tests and by ``voxfleet bench phone --provider telnyx``. It knows nothing of voxfleet
beyond URLs. TeXML is parsed with the TwiML parser of ``twilio_caller`` (same verbs and nouns).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from voxfleet.bench.conversation import Pacer, converse, until_left
from voxfleet.bench.twilio_caller import SILENCE, CallResult, TwimlAnswer, WebhookRefused, parse_twiml
from voxfleet.transports.telnyx_auth import sign
from voxfleet.transports.twilio_media import pcm16_to_ulaw


@dataclass(frozen=True)
class TelnyxAccount:
    """A Telnyx account as the local caller plays it: the Ed25519 key Telnyx signs its webhooks
    with (its public half is what the portal shows as the account's Public Key) and an API key."""

    private_key: Ed25519PrivateKey
    api_key: str
    account_sid: str

    @classmethod
    def from_seed(cls, seed: str) -> TelnyxAccount:
        digest = hashlib.sha256(seed.encode()).digest()
        return cls(Ed25519PrivateKey.from_private_bytes(digest), api_key=f"KEY{digest.hex()[:32].upper()}",
                   account_sid=str(uuid.UUID(bytes=digest[:16])))

    @property
    def public_key(self) -> str:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    @property
    def env(self) -> dict[str, str]:
        """A voxfleet server's settings for this account."""
        return {"TELNYX_PUBLIC_KEY": self.public_key, "TELNYX_API_KEY": self.api_key}


# an account that exists only on this machine (no request leaves it): the tests' and benches' calls
LOCAL_ACCOUNT = TelnyxAccount.from_seed("voxfleet local Telnyx account")


def call_control_id() -> str:
    return "v3:" + base64.urlsafe_b64encode(secrets.token_bytes(30)).decode()


def stream_attributes(answer: TwimlAnswer) -> dict[str, str]:
    """The attributes of the TeXML's ``<Connect><Stream>`` (empty without one)."""
    stream = ET.fromstring(answer.xml).find("Connect/Stream") if answer.xml else None
    return dict(stream.attrib) if stream is not None else {}


class TelnyxCaller:
    def __init__(self, base_url: str, account: TelnyxAccount = LOCAL_ACCOUNT) -> None:
        self.base_url = base_url.rstrip("/")
        self.account = account

    def call_params(self, call_sid: str, from_: str = "+13122010094", status: str = "ringing") -> dict[str, str]:
        """The fields of a TeXML call's webhooks."""
        return {"AccountSid": self.account.account_sid, "CallSid": call_sid, "CallSidLegacy": call_sid,
                "CallStatus": status, "ConnectionId": "2811212257810187875", "Direction": "inbound",
                "From": from_, "To": "+13122123456"}

    def signed(self, params: dict[str, str], *, timestamp: int | None = None,
               key: Ed25519PrivateKey | None = None) -> tuple[bytes, dict[str, str]]:
        """A webhook's body and headers, signed as Telnyx signs them (now, unless `timestamp`)."""
        body = urlencode(params).encode()
        headers = sign(key or self.account.private_key, str(int(time.time()) if timestamp is None else timestamp),
                       body)
        return body, {"Content-Type": "application/x-www-form-urlencoded", **headers}

    async def post(self, url: str, params: dict[str, str], **signing: Any) -> TwimlAnswer:
        """Request `url` as Telnyx requests TeXML: POST, signed."""
        body, headers = self.signed(params, **signing)
        async with httpx.AsyncClient(timeout=15) as http:
            response = await http.post(url, content=body, headers=headers)
        if response.status_code != 200:
            raise WebhookRefused(response.status_code, response.text)
        return parse_twiml(response.text)

    async def dial(self, agent: str, *, call_sid: str | None = None, from_: str = "+13122010094",
                   max_redirects: int = 30, **signing: Any) -> tuple[str, list[TwimlAnswer]]:
        """Request the voice URL and follow ``<Redirect>``s until TeXML connects a stream or hangs
        up. Returns the call's CallSid (its call_control_id) and every TeXML answer."""
        call_sid = call_sid or call_control_id()
        params = self.call_params(call_sid, from_)
        url = f"{self.base_url}/v1/telephony/telnyx/{agent}"
        answers: list[TwimlAnswer] = []
        for _ in range(max_redirects):
            answer = await self.post(url, params, **signing)
            answers.append(answer)
            if answer.stream_url or answer.hangup or not answer.redirect:
                return call_sid, answers
            await asyncio.sleep(answer.pause_s)
            url = answer.redirect
            params["CallStatus"] = "in-progress"
        return call_sid, answers

    async def stream_ended(self, answer: TwimlAnswer, call_sid: str) -> TwimlAnswer | None:
        """As Telnyx does once a ``<Connect>``'s stream has stopped with the call still up: run the
        next verb, here the ``<Redirect>`` (POST, signed) to what to do next."""
        if not answer.redirect:
            return None
        return await self.post(answer.redirect, self.call_params(call_sid, status="in-progress"))

    async def stream(self, answer: TwimlAnswer, call_sid: str, speech: list[np.ndarray], *,
                     listen_s: float = 20.0, after_greeting: bool = True, send_stop: bool = True,
                     start_overrides: dict[str, Any] | None = None,
                     ended: asyncio.Event | None = None) -> CallResult:
        """Open the TeXML's stream as Telnyx does and hold a conversation: wait for the greeting,
        then say each utterance (8 kHz int16) in real time, streaming silence otherwise; listen
        for the bot's answers; end with ``stop`` (the caller hung up; at once when `ended` is set:
        the call left the stream, as a REST update or a transfer does)."""
        assert answer.stream_url, "TeXML has no <Stream>"
        attributes = stream_attributes(answer)
        codec = attributes.get("codec", "default")
        stream = _Stream(str(uuid.uuid4()).upper(), call_sid, self.account.account_sid,
                         plays_rtp=attributes.get("bidirectionalMode", "mp3") == "rtp")
        result = CallResult(twiml=[answer])
        async with websockets.connect(answer.stream_url, max_size=2**20) as ws:
            await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
            start = {"user_id": self.account.account_sid, "call_control_id": call_sid,
                     "call_session_id": str(uuid.uuid4()), "from": "+13122010094", "to": "+13122123456",
                     "tags": [], "custom_parameters": dict(answer.parameters),
                     # the call's own codec (PCMU here) unless the <Stream> asks for another
                     "media_format": {"encoding": "PCMU" if codec == "default" else codec, "sample_rate": 8000,
                                      "channels": 1}}
            start.update(start_overrides or {})
            await ws.send(json.dumps({"event": "start", "sequence_number": stream.next_sequence(), "start": start,
                                      "stream_id": stream.stream_id}))
            started = time.monotonic()
            listener = asyncio.create_task(self._listen(ws, result, started, stream))
            try:
                conversation = asyncio.create_task(converse(
                    Pacer(lambda payload: stream.send_media(ws, payload)), [pcm16_to_ulaw(s) for s in speech],
                    SILENCE, result.speech_at, started, listen_s=listen_s, after_greeting=after_greeting))
                result.v2v_ms, call_left = await until_left(conversation, ended)
                if send_stop or call_left:
                    result.stopped_by_caller = True
                    await ws.send(json.dumps({"event": "stop", "sequence_number": stream.next_sequence(),
                                              "stop": {"user_id": self.account.account_sid,
                                                       "call_control_id": call_sid},
                                              "stream_id": stream.stream_id}))
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

    async def _listen(self, ws: Any, result: CallResult, started: float, stream: _Stream) -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                event = message.get("event")
                if event == "media" and stream.plays_rtp:
                    result.hear(base64.b64decode(message["media"]["payload"]), time.monotonic() - started)
                elif event == "mark":  # Telnyx sends a mark back once the media before it has played
                    result.marks += 1
                    await ws.send(json.dumps({"event": "mark", "sequence_number": stream.next_sequence(),
                                              "stream_id": stream.stream_id, "mark": message.get("mark", {})}))
                elif event == "clear":
                    result.clears += 1
        finally:
            result.closed_at = time.monotonic() - started


class _Stream:
    """One media stream's identifiers and counters."""

    def __init__(self, stream_id: str, call_sid: str, account_sid: str, *, plays_rtp: bool) -> None:
        self.stream_id, self.call_sid, self.account_sid, self.plays_rtp = stream_id, call_sid, account_sid, plays_rtp
        self.sequence, self.chunk = 0, 0

    def next_sequence(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    async def send_media(self, ws: Any, payload: bytes) -> None:
        self.chunk += 1
        await ws.send(json.dumps({"event": "media", "sequence_number": self.next_sequence(),
                                  "media": {"track": "inbound", "chunk": str(self.chunk),
                                            "timestamp": str(self.chunk * 20),
                                            "payload": base64.b64encode(payload).decode()},
                                  "stream_id": self.stream_id}))


def direct_answer(ws_url: str) -> TwimlAnswer:
    """The TeXML Pipecat's dev runner answers a Telnyx call with (``-t telnyx``), for a stream
    opened straight to its ``/ws``."""
    return parse_twiml(f'<Response><Connect><Stream url="{ws_url}" bidirectionalMode="rtp"></Stream></Connect>'
                       '</Response>')
