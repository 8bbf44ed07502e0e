"""Exotel's media streams (the Voicebot applet, bidirectional), as Exotel documents them: the
checks voxfleet applies at the edge to every frame a caller's stream sends, the audio it takes
from the bot's outbound frames, and where the stream's single-use token travels.

Inbound (Exotel -> us): ``connected``, ``start`` (``stream_sid``, ``call_sid``, ``account_sid``,
``from``, ``to``, ``custom_parameters``, ``media_format``), ``media`` (base64 16-bit linear PCM,
little-endian, 8 kHz mono; Exotel sends a chunk about every 100 ms), ``dtmf``, ``mark`` (audio we
sent has played), ``stop``. Outbound (us -> Exotel): ``media``, ``mark``, ``clear``. Every
identifier and number in Exotel's messages is a JSON string (``"sequence_number": "3"``).

The token: the stream URL voxfleet hands the Voicebot applet ends in ``?token=...``; Exotel
passes a URL's query parameters (at most 3, 256 characters) to the stream as
``start.custom_parameters``, where :class:`ExotelStreamCheck` reads it and
:func:`without_token` removes it before the bot sees the ``start``.

Pure: no I/O; the relay in ``control/streams.py`` feeds frames through :class:`ExotelStreamCheck`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from voxfleet.exceptions import StreamProtocolError
from voxfleet.ratelimit import TokenBucket
from voxfleet.transports.json_stream import parse_event
from voxfleet.transports.twilio_media import outbound_audio  # the same media message shape

INBOUND_EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")
SAMPLE_RATE = 8000  # what Pipecat's ExotelFrameSerializer assumes (its exotel_sample_rate default)
SAMPLE_BYTES = 2  # 16-bit linear PCM
CHUNK_MS = 100  # Exotel streams a chunk about every 100 ms
CHUNK_BYTES = SAMPLE_RATE * SAMPLE_BYTES * CHUNK_MS // 1000  # 1600: a multiple of 320, as Exotel asks
TOKEN_PARAMETER = "token"
MAX_CUSTOM_PARAMETERS = 3  # Exotel's documented limit on a stream URL's query parameters
MAX_CUSTOM_CHARS = 256  # ... and on their total length
# 100 ms of 8 kHz PCM is ~2.2 KB of base64; 32 KB holds over a second of it, or a start with room
MAX_FRAME_CHARS = 32 * 1024
MAX_FRAMES_PER_S = 100.0  # Exotel sends ~10 media messages a second, plus marks and DTMF
FRAME_BURST = 200
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def frame_rate() -> TokenBucket:
    """The bound on a stream's frames: ``FRAME_BURST`` at once, ``MAX_FRAMES_PER_S`` sustained."""
    return TokenBucket(MAX_FRAMES_PER_S, FRAME_BURST)


class ExotelStreamCheck:
    """Validates the inbound frames of one Exotel stream, in order. ``check`` returns the parsed
    message or raises StreamProtocolError naming the field and the value: size, rate (when
    ``now`` is given), JSON shape, event order and every field Exotel documents."""

    phone = True

    def __init__(self) -> None:
        self.started: dict[str, Any] | None = None  # the start message's "start" object
        self.stopped = False
        self.frames = 0
        self.rate = frame_rate()

    @property
    def stream_sid(self) -> str | None:
        return None if self.started is None else self.started["stream_sid"]

    @property
    def token(self) -> str | None:
        """The single-use token the start carried (``custom_parameters.token``)."""
        if self.started is None:
            return None
        token = self.started.get("custom_parameters", {}).get(TOKEN_PARAMETER)
        return token if isinstance(token, str) else None

    def outbound_speech(self, frame: str | bytes) -> bool:
        audio = outbound_audio(frame)
        return audio is not None and is_speech(audio)

    def check(self, frame: str | bytes, now: float | None = None) -> dict[str, Any]:
        self.frames += 1
        message, event = parse_event(frame, now, carrier="Exotel", frame_no=self.frames, rate=self.rate,
                                     max_chars=MAX_FRAME_CHARS, events=INBOUND_EVENTS)
        if self.stopped:
            raise StreamProtocolError("event", event, "arrived after stop")
        if event == "connected":
            if self.frames != 1:
                raise StreamProtocolError("event", event, "connected must be the first message")
            return message
        _number(message, "sequence_number")
        if event == "start":
            if self.started is not None:
                raise StreamProtocolError("event", event, "a stream starts once")
            self.started = _check_start(message.get("start"))
            if message.get("stream_sid", self.stream_sid) != self.stream_sid:
                raise StreamProtocolError("stream_sid", message.get("stream_sid"),
                                          f"differs from start.stream_sid ({self.stream_sid})")
            return message
        if self.started is None:
            raise StreamProtocolError("event", event, "arrived before start")
        if message.get("stream_sid", self.stream_sid) != self.stream_sid:
            raise StreamProtocolError("stream_sid", message.get("stream_sid"), f"is not this stream's ({self.stream_sid})")
        body = message.get(event)
        if event == "stop":
            self.stopped = True
            if body is not None:
                _check_stop(body, self.started)
            return message
        if not isinstance(body, dict):
            raise StreamProtocolError(event, body, "must be an object")
        if event == "media":
            _check_media(body)
        elif event == "dtmf":
            digit = body.get("digit")
            if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                raise StreamProtocolError("dtmf.digit", digit, "must be one of 0-9, *, #, A-D")
            _number(body, "duration", "dtmf.")
        else:  # mark: audio we sent before a mark of ours has played
            name = body.get("name")
            if not isinstance(name, str) or len(name) > 256:
                raise StreamProtocolError("mark.name", name, "must be a string of at most 256 characters")
        return message


def _number(obj: dict[str, Any], key: str, prefix: str = "") -> None:
    """An optional count Exotel sends as a string of digits (a bare integer is taken too)."""
    value = obj.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return
    if not isinstance(value, str) or not value.isdigit() or len(value) > 12:
        raise StreamProtocolError(prefix + key, value, "must be a whole number (a string of digits)")


def _check_start(start: Any) -> dict[str, Any]:
    if not isinstance(start, dict):
        raise StreamProtocolError("start", start, "must be an object")
    # Pipecat's create_transport recognizes Exotel by these three keys of the start
    for key in ("stream_sid", "call_sid", "account_sid"):
        value = start.get(key)
        if not isinstance(value, str) or not value or len(value) > 128:
            raise StreamProtocolError(f"start.{key}", value, "must be a non-empty string (at most 128 characters)")
    for key in ("from", "to"):
        value = start.get(key, "")
        if not isinstance(value, str) or len(value) > 64:
            raise StreamProtocolError(f"start.{key}", value, "must be a phone number string")
    params = start.get("custom_parameters", {})
    if not isinstance(params, dict):
        raise StreamProtocolError("start.custom_parameters", params, "must be an object")
    if len(params) > MAX_CUSTOM_PARAMETERS:
        raise StreamProtocolError("start.custom_parameters", sorted(params),
                                  f"Exotel passes at most {MAX_CUSTOM_PARAMETERS}")
    for name, value in params.items():
        if not isinstance(value, str) or not value.isascii() or len(name) + len(value) > MAX_CUSTOM_CHARS:
            raise StreamProtocolError(f"start.custom_parameters.{name}"[:60], value,
                                      f"must be an ASCII string (at most {MAX_CUSTOM_CHARS} characters)")
    media_format = start.get("media_format", {})
    if not isinstance(media_format, dict):
        raise StreamProtocolError("start.media_format", media_format, "must be an object")
    encoding = media_format.get("encoding", "audio/x-raw")
    if encoding != "audio/x-raw":
        raise StreamProtocolError("start.media_format.encoding", encoding, "only audio/x-raw (linear PCM)")
    rate = media_format.get("sample_rate", str(SAMPLE_RATE))
    if isinstance(rate, bool) or rate not in (SAMPLE_RATE, str(SAMPLE_RATE)):
        # Pipecat's Exotel serializer reads the stream as 8 kHz: a ?sample-rate= on the applet URL breaks it
        raise StreamProtocolError("start.media_format.sample_rate", rate,
                                  "must be 8000 (drop ?sample-rate= from the applet's URL)")
    bits = media_format.get("bit_rate", "16")
    if isinstance(bits, bool) or bits not in (16, "16"):
        raise StreamProtocolError("start.media_format.bit_rate", bits, "must be 16 (16-bit samples)")
    return start


def _check_media(media: dict[str, Any]) -> None:
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise StreamProtocolError("media.payload", payload, "must be a base64 string")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise StreamProtocolError("media.payload", payload, "is not valid base64") from None
    if len(audio) % SAMPLE_BYTES:
        raise StreamProtocolError("media.payload", f"<{len(audio)} bytes>", "is not whole 16-bit samples")
    _number(media, "chunk", "media.")
    _number(media, "timestamp", "media.")


def _check_stop(stop: Any, started: dict[str, Any]) -> None:
    if not isinstance(stop, dict):
        raise StreamProtocolError("stop", stop, "must be an object")
    if stop.get("call_sid", started["call_sid"]) != started["call_sid"]:
        raise StreamProtocolError("stop.call_sid", stop.get("call_sid"), f"is not this call's ({started['call_sid']})")
    reason = stop.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 64:
        raise StreamProtocolError("stop.reason", reason, "must be a short string")


def without_token(start_frame: str) -> str:
    """The start message as the bot sees it: the single-use token stays at the edge."""
    message = json.loads(start_frame)
    message.get("start", {}).get("custom_parameters", {}).pop(TOKEN_PARAMETER, None)
    return json.dumps(message)


def pcm16(audio: bytes) -> np.ndarray:
    """16-bit little-endian PCM bytes as samples (a trailing odd byte is dropped)."""
    return np.frombuffer(audio[: len(audio) - len(audio) % 2], dtype="<i2")


def is_speech(audio: bytes, threshold_rms: float = 300.0) -> bool:
    """True when 16-bit PCM audio is above a silence floor (about -40 dBFS)."""
    samples = pcm16(audio).astype(np.float64)
    if not samples.size:
        return False
    return float(np.sqrt(np.mean(samples * samples))) > threshold_rms
