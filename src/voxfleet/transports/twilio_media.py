"""Twilio Media Streams, as Twilio documents them: the checks voxfleet applies at the edge to
every frame a caller's stream sends, the audio it takes from the bot's outbound frames, and
G.711 mu-law. (The TwiML that answers the voice webhook is built in ``control/telephony.py``.)

Inbound (Twilio -> us): ``connected``, ``start``, ``media`` (base64 mu-law, 8 kHz mono),
``mark``, ``dtmf``, ``stop``. Outbound (us -> Twilio): ``media``, ``mark``, ``clear``.
Pure: no I/O; the relay in ``control/streams.py`` feeds frames through :class:`TwilioStreamCheck`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import numpy.typing as npt

from voxfleet.exceptions import StreamProtocolError
from voxfleet.ratelimit import TokenBucket
from voxfleet.transports.json_stream import parse_event

INBOUND_EVENTS = ("connected", "start", "media", "mark", "dtmf", "stop")
SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law, what Twilio sends per media message
MAX_FRAME_CHARS = 16 * 1024  # Twilio's messages are a few hundred bytes; its start a few KB at most
MAX_FRAMES_PER_S = 100.0  # Twilio sends 50 media messages a second, plus a few marks and DTMF
FRAME_BURST = 200


def frame_rate() -> TokenBucket:
    """The bound on a media stream's frames: ``FRAME_BURST`` at once, ``MAX_FRAMES_PER_S`` sustained."""
    return TokenBucket(MAX_FRAMES_PER_S, FRAME_BURST)


class TwilioStreamCheck:
    """Validates the inbound frames of one stream, in order. ``check`` returns the parsed message
    or raises StreamProtocolError naming the field and the value: size, rate (when ``now`` is
    given), JSON shape, event order and every field of ``start`` voxfleet reads."""

    phone = True

    def __init__(self) -> None:
        self.started: dict[str, Any] | None = None  # the start message's "start" object
        self.stopped = False
        self.frames = 0
        self.rate = frame_rate()

    def outbound_speech(self, frame: str | bytes) -> bool:
        audio = outbound_audio(frame)
        return audio is not None and is_speech(audio)

    @property
    def stream_sid(self) -> str | None:
        return None if self.started is None else self.started["streamSid"]

    def check(self, frame: str | bytes, now: float | None = None) -> dict[str, Any]:
        self.frames += 1
        message, event = parse_event(frame, now, carrier="Twilio", frame_no=self.frames, rate=self.rate,
                                     max_chars=MAX_FRAME_CHARS, events=INBOUND_EVENTS)
        if self.stopped:
            raise StreamProtocolError("event", event, "arrived after stop")
        if event == "connected":
            if self.frames != 1:
                raise StreamProtocolError("event", event, "connected must be the first message")
            return message
        if event == "start":
            if self.started is not None:
                raise StreamProtocolError("event", event, "a stream starts once")
            self.started = self._check_start(message.get("start"))
            return message
        if self.started is None:
            raise StreamProtocolError("event", event, "arrived before start")
        if message.get("streamSid", self.stream_sid) != self.stream_sid:
            raise StreamProtocolError("streamSid", message.get("streamSid"), f"is not this stream's ({self.stream_sid})")
        if event == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                raise StreamProtocolError("media.payload", payload, "must be a base64 string")
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise StreamProtocolError("media.payload", payload, "is not valid base64") from None
        elif event == "stop":
            self.stopped = True
        return message

    @staticmethod
    def _check_start(start: Any) -> dict[str, Any]:
        if not isinstance(start, dict):
            raise StreamProtocolError("start", start, "must be an object")
        for key in ("streamSid", "callSid"):
            if not isinstance(start.get(key), str) or not start[key]:
                raise StreamProtocolError(f"start.{key}", start.get(key), "must be a non-empty string")
        params = start.get("customParameters", {})
        if not isinstance(params, dict):
            raise StreamProtocolError("start.customParameters", params, "must be an object")
        for name, value in params.items():
            if not isinstance(value, str) or not value.isascii() or len(value) > 512:
                raise StreamProtocolError(f"start.customParameters.{name}"[:60], value,
                                          "must be an ASCII string of at most 512 characters")
        media_format = start.get("mediaFormat", {})
        if not isinstance(media_format, dict):
            raise StreamProtocolError("start.mediaFormat", media_format, "must be an object")
        encoding = media_format.get("encoding", "audio/x-mulaw")
        if encoding != "audio/x-mulaw":
            raise StreamProtocolError("start.mediaFormat.encoding", encoding, "only audio/x-mulaw is supported")
        rate = media_format.get("sampleRate", SAMPLE_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate != SAMPLE_RATE:
            raise StreamProtocolError("start.mediaFormat.sampleRate", rate, "must be the number 8000")
        channels = media_format.get("channels", 1)
        if isinstance(channels, bool) or channels != 1:
            raise StreamProtocolError("start.mediaFormat.channels", channels, "must be 1")
        return start


def outbound_audio(frame: str | bytes) -> bytes | None:
    """The mu-law audio of an outbound ``media`` message (None for anything else)."""
    if not isinstance(frame, str) or '"media"' not in frame:
        return None
    try:
        message = json.loads(frame)
        if message.get("event") != "media":
            return None
        return base64.b64decode(message["media"]["payload"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


# -- G.711 mu-law ------------------------------------------------------------------------------
_BIAS = 0x84


def ulaw_to_pcm16(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8)
    exponent = ((u >> 4) & 0x07).astype(np.int32)
    mantissa = (u & 0x0F).astype(np.int32)
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def pcm16_to_ulaw(samples: np.ndarray) -> bytes:
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    ulaw: npt.NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return ulaw.tobytes()


def is_speech(ulaw: bytes, threshold_rms: float = 300.0) -> bool:
    """True when the audio is above a silence floor (about -40 dBFS)."""
    if not ulaw:
        return False
    pcm = ulaw_to_pcm16(ulaw).astype(np.float64)
    return float(np.sqrt(np.mean(pcm * pcm))) > threshold_rms
