"""Plivo Audio Streams, as Plivo documents them (the "Stream Event Protocol" and the ``<Stream>``
XML element): the checks voxfleet applies at the edge to every frame a call's stream sends,
the audio it takes from the bot's outbound frames, and where the stream's single-use token
travels. (The Plivo XML that answers the voice webhook is built in ``control/plivo.py``.)

Inbound (Plivo -> us), JSON text frames: ``start`` (once, first: ``start.callId``,
``start.streamId``, ``start.accountId``, ``start.tracks``, ``start.mediaFormat`` and, top level,
``extra_headers``), ``media`` (base64 audio, ``media.track``/``chunk``/``timestamp``), ``dtmf``
(``dtmf.digit``), ``playedStream`` (a ``checkpoint`` reached: ``name``) and ``clearedAudio``
(after a ``clearAudio``). Plivo has no ``stop`` message: a call's end closes the socket.
Outbound (us -> Plivo): ``playAudio``, ``checkpoint``, ``clearAudio``, ``sendDTMF``.

The token: ``<Stream extraHeaders="...">`` is the documented way to hand data to the stream, and
Plivo gives it back as the ``start`` message's ``extra_headers`` string. Its values may only be
letters and digits, so the token rides hex-encoded as ``voxfleettoken=<hex>``;
:func:`without_token` takes it out of ``start`` before the bot sees it. (Plivo's reference also
repeats ``extra_headers`` in ``media`` messages; those are relayed unchanged: by then the token
is spent, and re-encoding every audio frame would cost more than it protects.)

Pure: no I/O; the relay in ``control/streams.py`` feeds frames through :class:`PlivoStreamCheck`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import numpy as np

from voxfleet.exceptions import StreamProtocolError
from voxfleet.transports.twilio_media import MAX_FRAME_CHARS, SAMPLE_RATE, frame_rate, is_speech
from voxfleet.transports.json_stream import parse_event

INBOUND_EVENTS = ("start", "media", "dtmf", "playedStream", "clearedAudio")
CONTENT_TYPE = "audio/x-mulaw;rate=8000"  # what the <Stream> asks for: Pipecat's Plivo serializer speaks it
TOKEN_HEADER = "voxfleettoken"
MAX_EXTRA_HEADERS = 1024  # Plivo allows 512 bytes in extraHeaders; what comes back has its separators too
MAX_ID_CHARS = 128  # Plivo's ids are UUIDs (36 characters)
DTMF_DIGITS = "0123456789*#ABCD"
TRACKS = ("inbound", "outbound")
_ALNUM = re.compile(r"^[A-Za-z0-9]*$")


class PlivoStreamCheck:
    """Validates the inbound frames of one Plivo stream, in order. ``check`` returns the parsed
    message or raises StreamProtocolError naming the field and the value: size, rate (when
    ``now`` is given), JSON shape, event order (``start`` first, once) and every field of each
    documented event that voxfleet or the bot reads."""

    phone = True

    def __init__(self) -> None:
        self.started: dict[str, Any] | None = None  # the start message's "start" object
        self.extra_headers: dict[str, str] = {}
        self.frames = 0
        self.rate = frame_rate()

    @property
    def stream_id(self) -> str | None:
        return None if self.started is None else str(self.started["streamId"])

    @property
    def call_id(self) -> str | None:
        return None if self.started is None else str(self.started["callId"])

    def stream_token(self) -> str | None:
        """The single-use token the ``<Stream>`` carried (hex-decoded), or None. A value that
        is not hex comes back as it is, for the token check to refuse."""
        value = self.extra_headers.get(TOKEN_HEADER)
        if not value:
            return None
        try:
            return bytes.fromhex(value).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return value

    def outbound_speech(self, frame: str | bytes) -> bool:
        audio = outbound_audio(frame)
        return audio is not None and audio_is_speech(*audio)

    def check(self, frame: str | bytes, now: float | None = None) -> dict[str, Any]:
        self.frames += 1
        message, event = parse_event(frame, now, carrier="Plivo", frame_no=self.frames, rate=self.rate,
                                     max_chars=MAX_FRAME_CHARS, events=INBOUND_EVENTS)
        _check_count("sequenceNumber", message.get("sequenceNumber"))
        extra = message.get("extra_headers")
        if extra is not None and (not isinstance(extra, str) or len(extra) > MAX_EXTRA_HEADERS):
            raise StreamProtocolError("extra_headers", extra, f"must be a string of at most {MAX_EXTRA_HEADERS} characters")
        if event == "start":
            if self.started is not None:
                raise StreamProtocolError("event", event, "a stream starts once")
            if self.frames != 1:
                raise StreamProtocolError("event", event, "start must be the first message")
            self.started = _check_start(message.get("start"))
            self.extra_headers = parse_extra_headers(extra or "")
            return message
        if self.started is None:
            raise StreamProtocolError("event", event, "arrived before start")
        if message.get("streamId", self.stream_id) != self.stream_id:
            raise StreamProtocolError("streamId", message.get("streamId"), f"is not this stream's ({self.stream_id})")
        if event == "media":
            _check_media(message.get("media"))
        elif event == "dtmf":
            dtmf = message.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
            if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
                raise StreamProtocolError("dtmf.digit", digit, f"must be one of {DTMF_DIGITS}")
        elif event == "playedStream":
            name = message.get("name")
            if name is not None and (not isinstance(name, str) or len(name) > 256):
                raise StreamProtocolError("name", name, "must be a string of at most 256 characters")
        return message


def _check_start(start: Any) -> dict[str, Any]:
    if not isinstance(start, dict):
        raise StreamProtocolError("start", start, "must be an object")
    for key in ("callId", "streamId"):
        value = start.get(key)
        if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not value.isascii():
            raise StreamProtocolError(f"start.{key}", value, f"must be a non-empty ASCII string of at most {MAX_ID_CHARS}")
    account = start.get("accountId")
    if account is not None and (not isinstance(account, str) or len(account) > MAX_ID_CHARS):
        raise StreamProtocolError("start.accountId", account, f"must be a string of at most {MAX_ID_CHARS}")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not tracks or any(track not in TRACKS for track in tracks):
        raise StreamProtocolError("start.tracks", tracks, f"must be a list of {' or '.join(TRACKS)}")
    media_format = start.get("mediaFormat", {})
    if not isinstance(media_format, dict):
        raise StreamProtocolError("start.mediaFormat", media_format, "must be an object")
    encoding = media_format.get("encoding", "audio/x-mulaw")
    if encoding != "audio/x-mulaw":  # the <Stream> asked for contentType audio/x-mulaw;rate=8000
        raise StreamProtocolError("start.mediaFormat.encoding", encoding, "only audio/x-mulaw is supported")
    rate = media_format.get("sampleRate", SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate != SAMPLE_RATE:
        raise StreamProtocolError("start.mediaFormat.sampleRate", rate, "must be the number 8000")
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
    track = media.get("track", "inbound")
    if track not in TRACKS:
        raise StreamProtocolError("media.track", track, f"must be {' or '.join(TRACKS)}")
    _check_count("media.chunk", media.get("chunk"))
    _check_count("media.timestamp", media.get("timestamp"))  # documented as a string of milliseconds


def _check_count(field: str, value: Any) -> None:
    """An optional counter: a whole number >= 0, as a JSON number or a string of digits."""
    if value is None:
        return
    if isinstance(value, bool) or not (
            (isinstance(value, int) and value >= 0)
            or (isinstance(value, str) and value.isdigit() and value.isascii() and len(value) <= 20)):
        raise StreamProtocolError(field, value, "must be a whole number >= 0")


def parse_extra_headers(value: str) -> dict[str, str]:
    """``extra_headers`` as Plivo hands it back: ``key=value`` pairs, separated by ``,`` (as the
    ``extraHeaders`` attribute writes them) or ``;`` (as Plivo's start example shows them)."""
    pairs: dict[str, str] = {}
    for item in re.split(r"[,;]", value):
        key, sep, val = item.strip().partition("=")
        if sep and key:
            pairs[key] = val
    return pairs


def extra_headers_for(token: str) -> str:
    """The ``extraHeaders`` attribute carrying `token`: Plivo allows only letters and digits."""
    value = f"{TOKEN_HEADER}={token.encode('ascii').hex()}"
    assert len(value) <= 512 and all(_ALNUM.match(part) for part in value.split("=")), value
    return value


def without_token(start_frame: str) -> str:
    """The start message as the bot sees it: the single-use token stays at the edge."""
    message = json.loads(start_frame)
    extra = message.get("extra_headers")
    if isinstance(extra, str):
        kept = [item for item in re.split(r"[,;]", extra)
                if item.strip() and item.strip().partition("=")[0] != TOKEN_HEADER]
        if kept:
            message["extra_headers"] = ",".join(kept)
        else:
            del message["extra_headers"]
    return json.dumps(message)


def outbound_audio(frame: str | bytes) -> tuple[bytes, str] | None:
    """The audio of an outbound ``playAudio`` message and its content type (None for anything else)."""
    if not isinstance(frame, str) or '"playAudio"' not in frame:
        return None
    try:
        message = json.loads(frame)
        if message.get("event") != "playAudio":
            return None
        media = message["media"]
        return base64.b64decode(media["payload"]), str(media.get("contentType", "audio/x-mulaw"))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def audio_is_speech(audio: bytes, content_type: str, threshold_rms: float = 300.0) -> bool:
    """True when `audio` (mu-law, or 16-bit linear PCM for ``audio/x-l16``) is above a silence floor."""
    if content_type.startswith("audio/x-l16"):
        pcm = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.float64)
        return pcm.size > 0 and float(np.sqrt(np.mean(pcm * pcm))) > threshold_rms
    return is_speech(audio, threshold_rms)
