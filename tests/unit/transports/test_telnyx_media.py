"""Telnyx Media Streaming (transports/telnyx_media.py): every documented inbound event, field
checks naming the field, order, size and rate bounds, the token kept at the edge."""

import base64
import json

import pytest

from voxfleet.control.errors import ws_close_for
from voxfleet.exceptions import StreamProtocolError
from voxfleet.transports.telnyx_media import TelnyxStreamCheck, connected_frame, without_token
from voxfleet.transports.twilio_media import FRAME_BURST, pcm16_to_ulaw

import numpy as np

CONNECTED = json.dumps({"event": "connected", "version": "1.0.0"})
STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL = "v3:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"


def start_with(**fields: object) -> str:
    """The start message of Telnyx's documentation (with voxfleet's two custom parameters)."""
    start = {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237", "call_control_id": CALL,
             "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f", "from": "+13122010094",
             "to": "+13122123456", "tags": ["TAG1", "TAG2"], "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
             "custom_parameters": {"session": "s", "token": "t"},
             "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}, **fields}
    return json.dumps({"event": "start", "sequence_number": "1", "start": start, "stream_id": STREAM})


START = start_with()


def media(payload: bytes = b"\xff" * 160, stream_id: str = STREAM, **fields: object) -> str:
    body = {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": base64.b64encode(payload).decode(), **fields}
    return json.dumps({"event": "media", "sequence_number": "4", "media": body, "stream_id": stream_id})


def event(name: str, **fields: object) -> str:
    return json.dumps({"event": name, "stream_id": STREAM, "sequence_number": "5", **fields})


def test_a_documented_stream_passes():
    check = TelnyxStreamCheck()
    for frame in (CONNECTED, START, media(), event("mark", mark={"name": "some_mark_name"}),
                  event("dtmf", occurred_at="2025-06-05T08:54:19.698408Z", dtmf={"digit": "1"}),
                  json.dumps({"event": "error", "stream_id": STREAM,
                              "payload": {"code": 100003, "title": "malformed_frame",
                                          "detail": "Received frame was not formed correctly"}}),
                  media(), event("stop", stop={"user_id": "3E6F995F", "call_control_id": CALL})):
        check.check(frame)
    assert check.stream_id == STREAM and check.call_control_id == CALL and check.stopped
    assert check.custom_parameters == {"session": "s", "token": "t"}


def test_a_stream_may_open_with_start_and_a_pcma_call_is_accepted():
    check = TelnyxStreamCheck()
    check.check(start_with(media_format={"encoding": "PCMA", "sample_rate": 8000, "channels": 1}))
    check.check(media())
    assert json.loads(connected_frame()) == {"event": "connected", "version": "1.0.0"}


def test_a_stream_faster_than_telnyx_ever_sends_is_closed():
    check = TelnyxStreamCheck()
    check.check(CONNECTED, 0.0)
    check.check(START, 0.0)
    for i in range(500):  # 50 frames a second, as Telnyx sends an inbound track, for 10 s: fine
        check.check(media(), i * 0.02)
    with pytest.raises(StreamProtocolError, match="frames/s"):
        for _ in range(FRAME_BURST + 1):  # then a burst beyond the bucket at one instant
            check.check(media(), 10.0)


@pytest.mark.parametrize("frames, field, reason", [
    ([CONNECTED, START, "{not json"], "frame", "not JSON"),
    ([CONNECTED, START, "[1, 2]"], "frame", "not a JSON object"),
    ([CONNECTED, START, b"\x00\x01"], "frame", "binary frames"),
    ([CONNECTED, START, "x" * 20000], "frame", "over 16384"),
    ([CONNECTED, START, "[" * 5000 + "]" * 5000], "frame", "nested too deeply"),
    ([CONNECTED, START, event("playAudio")], "event", "must be one of"),
    ([CONNECTED, CONNECTED], "event", "connected must be the first message"),
    ([CONNECTED, media()], "event", "arrived before start"),
    ([CONNECTED, START, START], "event", "a stream starts once"),
    ([CONNECTED, START, event("stop", stop={}), media()], "event", "arrived after stop"),
    ([json.dumps({"event": "connected", "version": 1})], "version", "must be a string"),
    ([CONNECTED, START.replace(f'"stream_id": "{STREAM}"', '"stream_id": ""')], "stream_id", "non-empty string"),
    ([CONNECTED, json.dumps({"event": "start", "stream_id": "S", "start": "x"})], "start", "must be an object"),
    ([CONNECTED, start_with(call_control_id=7)], "start.call_control_id", "non-empty string"),
    ([CONNECTED, start_with(**{"from": 13122010094})], "start.from", "must be a string"),
    ([CONNECTED, start_with(tags="TAG1")], "start.tags", "list of strings"),
    ([CONNECTED, start_with(custom_parameters=["session"])], "start.custom_parameters", "must be an object"),
    ([CONNECTED, start_with(custom_parameters={"token": 12345})], "start.custom_parameters.token", "ASCII string"),
    ([CONNECTED, start_with(custom_parameters={"token": "t\u00e9l"})], "start.custom_parameters.token", "ASCII"),
    ([CONNECTED, start_with(custom_parameters={"token": "t" * 513})], "start.custom_parameters.token", "512"),
    ([CONNECTED, start_with(media_format=None)], "start.media_format", "must be an object"),
    ([CONNECTED, start_with(media_format={"encoding": "L16", "sample_rate": 16000})], "start.media_format.encoding",
     "PCMU or PCMA"),
    ([CONNECTED, start_with(media_format={"encoding": "PCMU", "sample_rate": "8000"})],
     "start.media_format.sample_rate", "the number 8000"),
    ([CONNECTED, start_with(media_format={"encoding": "PCMU", "sample_rate": 16000})],
     "start.media_format.sample_rate", "the number 8000"),
    ([CONNECTED, start_with(media_format={"encoding": "PCMU", "channels": 2})], "start.media_format.channels",
     "must be 1"),
    ([CONNECTED, START.replace('"sequence_number": "1"', '"sequence_number": "one"')], "sequence_number",
     "whole number"),
    ([CONNECTED, START, media(stream_id="OTHER")], "stream_id", "is not this stream's"),
    ([CONNECTED, START, json.dumps({"event": "media", "stream_id": STREAM})], "media", "must be an object"),
    ([CONNECTED, START, json.dumps({"event": "media", "media": {"payload": 5}})], "media.payload", "base64 string"),
    ([CONNECTED, START, json.dumps({"event": "media", "media": {"payload": "%%%"}})], "media.payload",
     "not valid base64"),
    ([CONNECTED, START, media(track="both")], "media.track", "inbound or outbound"),
    ([CONNECTED, START, media(chunk="-1")], "media.chunk", "whole number"),
    ([CONNECTED, START, media(timestamp=True)], "media.timestamp", "whole number"),
    ([CONNECTED, START, event("dtmf", dtmf={"digit": "11"})], "dtmf.digit", "0-9"),
    ([CONNECTED, START, event("dtmf", dtmf="1")], "dtmf", "must be an object"),
    ([CONNECTED, START, event("mark", mark={"name": None})], "mark.name", "must be a string"),
    ([CONNECTED, START, event("error", payload={"code": "100002"})], "payload.code", "must be a number"),
    ([CONNECTED, START, event("error", payload={"code": 100002, "title": 3})], "payload.title", "must be a string"),
    ([CONNECTED, START, event("stop", stop=[])], "stop", "must be an object"),
    ([CONNECTED, START, event("stop", stop={"call_control_id": "v3:other"})], "stop.call_control_id",
     "is not this stream's call"),
])
def test_a_frame_that_breaks_the_protocol_names_the_field(frames, field, reason):
    check = TelnyxStreamCheck()
    for frame in frames[:-1]:
        check.check(frame)
    with pytest.raises(StreamProtocolError) as raised:
        check.check(frames[-1])
    assert raised.value.field == field and reason in str(raised.value), str(raised.value)
    code, close_reason = ws_close_for(raised.value)
    assert code == 1007 and close_reason.startswith(f"STREAM_PROTOCOL_ERROR: {field}")


def test_the_token_stays_at_the_edge():
    seen = json.loads(without_token(START))
    assert seen["start"]["custom_parameters"] == {"session": "s"}
    assert seen["stream_id"] == STREAM and seen["start"]["call_control_id"] == CALL  # what Pipecat detects


def test_the_first_audible_outbound_media_is_speech():
    check = TelnyxStreamCheck()
    tone = (np.sin(np.arange(160) / 8000 * 2 * np.pi * 440) * 8000).astype(np.int16)
    outbound = lambda audio: json.dumps({"event": "media", "media": {"payload": base64.b64encode(audio).decode()}})  # noqa: E731
    assert not check.outbound_speech(outbound(b"\xff" * 160))
    assert check.outbound_speech(outbound(pcm16_to_ulaw(tone)))
    assert not check.outbound_speech(json.dumps({"event": "clear"}))
    assert not check.outbound_speech(json.dumps({"event": "mark", "mark": {"name": "media"}}))
