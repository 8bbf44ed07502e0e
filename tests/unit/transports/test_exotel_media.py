"""Exotel media streams (transports/exotel_media.py): frame checks of every documented event,
size and rate bounds, the token in the start and its removal, speech detection on 16-bit PCM;
and Exotel's Basic-auth check (transports/exotel_auth.py)."""

import base64
import json

import numpy as np
import pytest

from voxfleet.control.errors import ws_close_for
from voxfleet.exceptions import StreamProtocolError
from voxfleet.transports.exotel_auth import ExotelCredentials, authorization_problem, basic_authorization
from voxfleet.transports.exotel_media import (
    CHUNK_BYTES,
    FRAME_BURST,
    ExotelStreamCheck,
    is_speech,
    outbound_audio,
    without_token,
)

CONNECTED = json.dumps({"event": "connected"})


def start_with(**fields: object) -> str:
    start = {"stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1", "from": "+919876543210",
             "to": "+918047491899", "custom_parameters": {"token": "t"},
             "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}
    start.update(fields)
    return json.dumps({"event": "start", "sequence_number": "1", "stream_sid": "MZ1", "start": start})


START = start_with()


def media(payload: bytes = b"\x00\x00" * 800, sid: str = "MZ1", **fields: object) -> str:
    body = {"chunk": "1", "timestamp": "100", "payload": base64.b64encode(payload).decode(), **fields}
    return json.dumps({"event": "media", "sequence_number": "2", "stream_sid": sid, "media": body})


def event(name: str, body: object, **top: object) -> str:
    return json.dumps({"event": name, "sequence_number": "3", "stream_sid": "MZ1", name: body, **top})


def test_a_documented_stream_passes():
    check = ExotelStreamCheck()
    for frame in (CONNECTED, START, media(), event("dtmf", {"digit": "5", "duration": "100"}),
                  event("mark", {"name": "greeting"}), media(),
                  event("stop", {"call_sid": "CA1", "account_sid": "AC1", "reason": "callended"})):
        check.check(frame)
    assert check.stream_sid == "MZ1" and check.token == "t" and check.stopped


def test_a_stream_faster_than_exotel_ever_sends_is_closed():
    check = ExotelStreamCheck()
    check.check(CONNECTED, 0.0)
    check.check(START, 0.0)
    for i in range(500):  # 50 chunks a second (five times Exotel's 100 ms chunks) for 10 s: fine
        check.check(media(), i * 0.02)
    with pytest.raises(StreamProtocolError, match="frames/s"):
        for _ in range(FRAME_BURST + 1):
            check.check(media(), 10.0)


@pytest.mark.parametrize("frames, field, reason", [
    ([CONNECTED, START, "{not json"], "frame", "not JSON"),
    ([CONNECTED, START, "[1, 2]"], "frame", "not a JSON object"),
    ([CONNECTED, START, b"\x00\x01"], "frame", "binary frames"),
    ([CONNECTED, START, json.dumps({"event": "clear", "stream_sid": "MZ1"})], "event", "must be one of"),
    ([CONNECTED, media()], "event", "arrived before start"),
    ([START, CONNECTED], "event", "connected must be the first message"),
    ([CONNECTED, START, START], "event", "a stream starts once"),
    ([CONNECTED, START, media(sid="MZ2")], "stream_sid", "is not this stream's"),
    ([CONNECTED, START, media(b"\x00\x00\x00")], "media.payload", "whole 16-bit samples"),
    ([CONNECTED, START, event("media", {"payload": "%%%"})], "media.payload", "not valid base64"),
    ([CONNECTED, START, event("media", {"payload": 12})], "media.payload", "base64 string"),
    ([CONNECTED, START, event("media", "AAAA")], "media", "must be an object"),
    ([CONNECTED, START, media(chunk="one")], "media.chunk", "whole number"),
    ([CONNECTED, START, event("dtmf", {"digit": "55"})], "dtmf.digit", "must be one of"),
    ([CONNECTED, START, event("dtmf", {"digit": "5", "duration": -1})], "dtmf.duration", "whole number"),
    ([CONNECTED, START, event("mark", {"name": 7})], "mark.name", "string"),
    ([CONNECTED, START, event("stop", {"call_sid": "CA2"})], "stop.call_sid", "is not this call's"),
    ([CONNECTED, START, event("stop", {}), media()], "event", "arrived after stop"),
    ([CONNECTED, START, event("mark", {"name": "a"}, sequence_number="x")], "sequence_number", "whole number"),
    ([CONNECTED, "x" * 40000], "frame", "over 32768"),
])
def test_malformed_frames_name_the_field(frames, field, reason):
    check = ExotelStreamCheck()
    with pytest.raises(StreamProtocolError) as raised:
        for frame in frames:
            check.check(frame)
    assert raised.value.field == field and reason in str(raised.value)
    code, close_reason = ws_close_for(raised.value)
    assert code == 1007 and close_reason.startswith("STREAM_PROTOCOL_ERROR: ") and len(close_reason) <= 120


@pytest.mark.parametrize("fields, field, reason", [
    ({"stream_sid": ""}, "start.stream_sid", "non-empty string"),
    ({"call_sid": 42}, "start.call_sid", "non-empty string"),
    ({"account_sid": None}, "start.account_sid", "non-empty string"),
    ({"from": 919876543210}, "start.from", "phone number"),
    ({"custom_parameters": "token=t"}, "start.custom_parameters", "must be an object"),
    ({"custom_parameters": {"a": "1", "b": "2", "c": "3", "d": "4"}}, "start.custom_parameters", "at most 3"),
    ({"custom_parameters": {"token": 12345}}, "start.custom_parameters.token", "ASCII string"),
    ({"custom_parameters": {"token": "t\u00e9l\u00e9phone"}}, "start.custom_parameters.token", "ASCII string"),
    ({"custom_parameters": {"token": "t" * 300}}, "start.custom_parameters.token", "at most 256"),
    ({"media_format": ["audio/x-raw"]}, "start.media_format", "must be an object"),
    ({"media_format": {"encoding": "audio/x-mulaw"}}, "start.media_format.encoding", "audio/x-raw"),
    ({"media_format": {"sample_rate": "16000"}}, "start.media_format.sample_rate", "must be 8000"),
    ({"media_format": {"sample_rate": True}}, "start.media_format.sample_rate", "must be 8000"),
    ({"media_format": {"bit_rate": "8"}}, "start.media_format.bit_rate", "must be 16"),
])
def test_malformed_starts_name_the_field(fields, field, reason):
    check = ExotelStreamCheck()
    check.check(CONNECTED)
    with pytest.raises(StreamProtocolError) as raised:
        check.check(start_with(**fields))
    assert raised.value.field == field and reason in str(raised.value)


def test_the_start_may_omit_what_exotel_defaults_and_numbers_may_be_bare():
    check = ExotelStreamCheck()
    check.check(json.dumps({"event": "start", "start": {"stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1",
                                                       "media_format": {"sample_rate": 8000, "bit_rate": 16}}}))
    check.check(media(chunk=3, timestamp=300))
    assert check.token is None


def test_a_start_whose_stream_sid_disagrees_is_refused():
    check = ExotelStreamCheck()
    frame = json.loads(START)
    frame["stream_sid"] = "MZ9"
    with pytest.raises(StreamProtocolError, match="differs from start.stream_sid"):
        check.check(json.dumps(frame))


def test_the_token_stays_at_the_edge():
    seen = json.loads(without_token(start_with(custom_parameters={"token": "secret", "lang": "hi"})))
    assert seen["start"]["custom_parameters"] == {"lang": "hi"}
    assert seen["start"]["call_sid"] == "CA1"  # everything else as Exotel sent it (Pipecat detects Exotel by it)


def test_outbound_speech_is_16_bit_pcm_above_the_silence_floor():
    check = ExotelStreamCheck()
    t = np.arange(CHUNK_BYTES // 2) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    frame = json.dumps({"event": "media", "stream_sid": "MZ1", "media": {"payload": base64.b64encode(tone).decode()}})
    assert outbound_audio(frame) == tone and check.outbound_speech(frame)
    assert not check.outbound_speech(media(b"\x00\x00" * 800))
    assert not check.outbound_speech(json.dumps({"event": "clear", "stream_sid": "MZ1"}))
    assert not check.outbound_speech(json.dumps({"event": "mark", "stream_sid": "MZ1", "mark": {"name": "media"}}))
    assert not is_speech(b"")


# -- Basic auth, as Exotel sends it for a URL carrying KEY:TOKEN@ ------------------------------
CREDENTIALS = ExotelCredentials("exotel-key", "exotel-token")


def test_the_configured_credentials_pass():
    assert authorization_problem(basic_authorization("exotel-key", "exotel-token"), CREDENTIALS) is None
    assert CREDENTIALS.authorization() == "Basic " + base64.b64encode(b"exotel-key:exotel-token").decode()
    assert "exotel-token" not in repr(CREDENTIALS)


@pytest.mark.parametrize("header, reason", [
    (None, "Authorization header missing"),
    ("", "Authorization header missing"),
    ("Bearer abc", "not Basic"),
    ("Basic", "not Basic"),
    ("Basic %%%", "malformed"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed"),
    (basic_authorization("exotel-key", "wrong-token"), "are not EXOTEL_API_KEY:EXOTEL_API_TOKEN"),
    (basic_authorization("other-key", "exotel-token"), "are not EXOTEL_API_KEY:EXOTEL_API_TOKEN"),
])
def test_forged_or_missing_credentials_are_named(header, reason):
    problem = authorization_problem(header, CREDENTIALS)
    assert problem is not None and reason in problem


def test_without_configured_credentials_everything_is_refused():
    problem = authorization_problem(basic_authorization("exotel-key", "exotel-token"), None)
    assert problem == "EXOTEL_API_KEY and EXOTEL_API_TOKEN are not configured"
