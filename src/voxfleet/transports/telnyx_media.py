"""Telnyx Media Streaming, as Telnyx documents it: the checks voxfleet applies at the edge to
every frame a call's stream sends, the audio it takes from the bot's outbound frames, and where
the stream's single-use token travels. (The TeXML that answers the voice webhook is built in
``control/telnyx.py``; Telnyx's webhook signatures are checked in ``transports/telnyx_auth.py``.)

Inbound (Telnyx -> us): ``connected``, ``start``, ``media`` (base64 RTP payload without headers:
PCMU or PCMA, 8 kHz mono), ``mark`` (echoing ours), ``dtmf``, ``error``, ``stop``; every message
after ``connected`` carries the stream's ``stream_id`` at the top level. Outbound (us -> Telnyx,
``bidirectionalMode="rtp"``): ``media``, ``mark``, ``clear``, the same shapes as Twilio's, so the
outbound audio is read with ``twilio_media.outbound_audio``.

The token: TeXML's ``<Stream>`` takes ``<Parameter name value>`` children, which Telnyx puts in the
start message as ``start.custom_parameters``; voxfleet sends ``session`` and ``token`` there, and
:func:`without_token` removes the token before the bot sees the message.

Pure: no I/O; the relay in ``control/streams.py`` feeds frames through :class:`TelnyxStreamCheck`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from voxfleet.exceptions import StreamProtocolError
from voxfleet.transports.json_stream import parse_event
from voxfleet.transports.twilio_media import (
    MAX_FRAME_CHARS,
    SAMPLE_RATE,
    frame_rate,
    is_speech,
    outbound_audio,
)

INBOUND_EVENTS = ("connected", "start", "media", "mark", "dtmf", "error", "stop")
# what Pipecat's TelnyxFrameSerializer decodes; Telnyx also streams G722, OPUS, AMR-WB and L16,
# which the <Stream codec="PCMU"> voxfleet answers with does not ask for
ENCODINGS = ("PCMU", "PCMA")
TRACKS = ("inbound", "outbound")
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MAX_PARAMETER_CHARS = 512


class TelnyxStreamCheck:
    """Validates the inbound frames of one Telnyx stream, in order. ``check`` returns the parsed
    message or raises StreamProtocolError naming the field and the value: size, rate (when
    ``now`` is given), JSON shape, event order, the stream's own ``stream_id``, and every field
    of each documented event that is present."""

    phone = True

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.started: dict[str, Any] | None = None  # the start message's "start" object
        self.stopped = False
        self.frames = 0
        self.rate = frame_rate()

    def outbound_speech(self, frame: str | bytes) -> bool:
        audio = outbound_audio(frame)  # the bot's serializer sends PCMU (create_transport's inbound_encoding)
        return audio is not None and is_speech(audio)

    @property
    def call_control_id(self) -> str | None:
        return None if self.started is None else self.started["call_control_id"]

    @property
    def custom_parameters(self) -> dict[str, str]:
        return {} if self.started is None else self.started.get("custom_parameters", {})

    def check(self, frame: str | bytes, now: float | None = None) -> dict[str, Any]:
        self.frames += 1
        message, event = parse_event(frame, now, carrier="Telnyx", frame_no=self.frames, rate=self.rate,
                                     max_chars=MAX_FRAME_CHARS, events=INBOUND_EVENTS)
        if self.stopped:
            raise StreamProtocolError("event", event, "arrived after stop")
        _check_counter(message, "sequence_number")
        if event == "connected":
            if self.frames != 1:
                raise StreamProtocolError("event", event, "connected must be the first message")
            _optional_string(message, "version")
            return message
        if event == "start":
            if self.started is not None:
                raise StreamProtocolError("event", event, "a stream starts once")
            stream_id = message.get("stream_id")
            if not isinstance(stream_id, str) or not stream_id:
                raise StreamProtocolError("stream_id", stream_id, "must be a non-empty string")
            self.started = _check_start(message.get("start"))
            self.stream_id = stream_id
            return message
        if self.started is None:
            raise StreamProtocolError("event", event, "arrived before start")
        if message.get("stream_id", self.stream_id) != self.stream_id:
            raise StreamProtocolError("stream_id", message.get("stream_id"), f"is not this stream's ({self.stream_id})")
        if event == "media":
            _check_media(message.get("media"))
        elif event == "dtmf":
            dtmf = _object(message, "dtmf")
            if dtmf.get("digit") not in DTMF_DIGITS:
                raise StreamProtocolError("dtmf.digit", dtmf.get("digit"), "must be one of 0-9, *, #, A-D")
            _optional_string(message, "occurred_at")
        elif event == "mark":
            mark = _object(message, "mark")
            if not isinstance(mark.get("name"), str):
                raise StreamProtocolError("mark.name", mark.get("name"), "must be a string")
        elif event == "error":
            payload = _object(message, "payload")
            code = payload.get("code")
            if isinstance(code, bool) or not isinstance(code, int):
                raise StreamProtocolError("payload.code", code, "must be a number (Telnyx's error code)")
            for key in ("title", "detail"):
                _optional_string(payload, key, f"payload.{key}")
        elif event == "stop":
            stop = message.get("stop", {})
            if not isinstance(stop, dict):
                raise StreamProtocolError("stop", stop, "must be an object")
            if stop.get("call_control_id", self.call_control_id) != self.call_control_id:
                raise StreamProtocolError("stop.call_control_id", stop.get("call_control_id"),
                                          f"is not this stream's call ({self.call_control_id})")
            self.stopped = True
        return message


def _check_start(start: Any) -> dict[str, Any]:
    if not isinstance(start, dict):
        raise StreamProtocolError("start", start, "must be an object")
    call_control_id = start.get("call_control_id")
    if not isinstance(call_control_id, str) or not call_control_id:
        raise StreamProtocolError("start.call_control_id", call_control_id, "must be a non-empty string")
    for key in ("user_id", "call_session_id", "from", "to", "client_state"):
        _optional_string(start, key, f"start.{key}")
    tags = start.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise StreamProtocolError("start.tags", tags, "must be a list of strings")
    params = start.get("custom_parameters", {})
    if not isinstance(params, dict):
        raise StreamProtocolError("start.custom_parameters", params, "must be an object")
    for name, value in params.items():
        if not isinstance(value, str) or not value.isascii() or len(value) > MAX_PARAMETER_CHARS:
            raise StreamProtocolError(f"start.custom_parameters.{name}"[:60], value,
                                      f"must be an ASCII string of at most {MAX_PARAMETER_CHARS} characters")
    media_format = start.get("media_format")
    if not isinstance(media_format, dict):
        # Pipecat's serializer takes its decoder from media_format.encoding: without it, no audio
        raise StreamProtocolError("start.media_format", media_format, "must be an object")
    encoding = media_format.get("encoding")
    if encoding not in ENCODINGS:
        raise StreamProtocolError("start.media_format.encoding", encoding, f"must be {' or '.join(ENCODINGS)}")
    rate = media_format.get("sample_rate", SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate != SAMPLE_RATE:
        raise StreamProtocolError("start.media_format.sample_rate", rate, f"must be the number {SAMPLE_RATE}")
    channels = media_format.get("channels", 1)
    if isinstance(channels, bool) or channels != 1:
        raise StreamProtocolError("start.media_format.channels", channels, "must be 1")
    return start


def _check_media(media: Any) -> None:
    if not isinstance(media, dict):
        raise StreamProtocolError("media", media, "must be an object")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise StreamProtocolError("media.payload", payload, "must be a base64 string")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise StreamProtocolError("media.payload", payload, "is not valid base64") from None
    if media.get("track", "inbound") not in TRACKS:
        raise StreamProtocolError("media.track", media.get("track"), f"must be {' or '.join(TRACKS)}")
    for key in ("chunk", "timestamp"):
        _check_counter(media, key, f"media.{key}")


def _object(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise StreamProtocolError(key, value, "must be an object")
    return value


def _optional_string(message: dict[str, Any], key: str, field: str | None = None) -> None:
    if key in message and not isinstance(message[key], str):
        raise StreamProtocolError(field or key, message[key], "must be a string")


def _check_counter(message: dict[str, Any], key: str, field: str | None = None) -> None:
    """Telnyx sends its counters (sequence_number, chunk, timestamp) as strings of digits."""
    if key not in message:
        return
    value = message[key]
    if isinstance(value, bool) or not (isinstance(value, int) and value >= 0
                                       or isinstance(value, str) and value.isascii() and value.isdigit()):
        raise StreamProtocolError(field or key, value, "must be a whole number (a string of digits)")


def without_token(start_frame: str) -> str:
    """The start message as the bot sees it: the single-use token stays at the edge."""
    message = json.loads(start_frame)
    message.get("start", {}).get("custom_parameters", {}).pop("token", None)
    return json.dumps(message)


def connected_frame() -> str:
    """The documented first message, for a stream that opens with ``start`` (Pipecat's parser
    reads two messages before it picks the carrier)."""
    return json.dumps({"event": "connected", "version": "1.0.0"})
