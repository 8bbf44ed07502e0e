"""Twilio media streams (transports/twilio_media.py): frame checks, mu-law, speech detection."""

import base64
import json

import numpy as np
import pytest

from voxfleet.control.errors import ws_close_for
from voxfleet.exceptions import StreamProtocolError
from voxfleet.transports.twilio_media import (
    FRAME_BURST,
    TwilioStreamCheck,
    is_speech,
    outbound_audio,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)


def media(payload: bytes = b"\xff" * 160, sid: str = "MZ1") -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(payload).decode()}})


START = json.dumps({"event": "start", "streamSid": "MZ1", "start": {
    "streamSid": "MZ1", "callSid": "CA1", "customParameters": {"session": "s", "token": "t"},
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_with(**fields: object) -> str:
    start = {"streamSid": "MZ1", "callSid": "CA1", "customParameters": {"session": "s", "token": "t"}, **fields}
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": start})


def test_a_stream_faster_than_twilio_ever_sends_is_closed():
    check = TwilioStreamCheck()
    check.check(CONNECTED, 0.0)
    check.check(START, 0.0)
    for i in range(500):  # 50 frames a second, as Twilio sends, for 10 s: fine
        check.check(media(), i * 0.02)
    with pytest.raises(StreamProtocolError, match="frames/s"):
        for _ in range(FRAME_BURST + 1):  # then a burst beyond the bucket at one instant
            check.check(media(), 10.0)


def test_a_documented_stream_passes():
    check = TwilioStreamCheck()
    for frame in (CONNECTED, START, media(), json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "a"}}),
                  json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "1"}}), media(),
                  json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}})):
        check.check(frame)
    assert check.stream_sid == "MZ1" and check.stopped


@pytest.mark.parametrize("frames, field, reason", [
    ([CONNECTED, START, "{not json"], "frame", "not JSON"),
    ([CONNECTED, START, "[1, 2]"], "frame", "not a JSON object"),
    ([CONNECTED, START, b"\x00\x01"], "frame", "binary"),
    ([CONNECTED, START, json.dumps({"event": "dance"})], "event", "must be one of"),
    ([CONNECTED, media()], "event", "before start"),
    ([CONNECTED, START, START], "event", "starts once"),
    ([START, CONNECTED], "event", "first message"),
    ([CONNECTED, START, media(sid="MZ2")], "streamSid", "not this stream"),
    ([CONNECTED, START, json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "!!!*"}})],
     "media.payload", "not valid base64"),
    ([CONNECTED, START, json.dumps({"event": "media", "streamSid": "MZ1", "media": {}})], "media.payload", "base64 string"),
    ([CONNECTED, START, json.dumps({"event": "stop", "streamSid": "MZ1"}), media()], "event", "after stop"),
    ([CONNECTED, json.dumps({"event": "start", "start": {"streamSid": "MZ1"}})], "start.callSid", "non-empty"),
    ([CONNECTED, json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                                         "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000}}})],
     "start.mediaFormat.encoding", "only audio/x-mulaw"),
    ([CONNECTED, start_with(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000abc"})],
     "start.mediaFormat.sampleRate", "the number 8000"),
    ([CONNECTED, start_with(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": True})],
     "start.mediaFormat.sampleRate", "the number 8000"),
    ([CONNECTED, start_with(mediaFormat=["audio/x-mulaw"])], "start.mediaFormat", "must be an object"),
    ([CONNECTED, start_with(mediaFormat="audio/x-mulaw")], "start.mediaFormat", "must be an object"),
    ([CONNECTED, start_with(customParameters={"session": "s", "token": 12})], "start.customParameters.token",
     "ASCII string"),
    ([CONNECTED, start_with(customParameters={"session": "s", "token": "t\u00e9"})],
     "start.customParameters.token", "ASCII string"),
    ([CONNECTED, "[" * 5000 + "]" * 5000], "frame", "nested too deeply"),
    ([CONNECTED, START, media(b"\xff" * 20000)], "frame", "over 16384"),
])
def test_protocol_violations_name_the_field(frames, field, reason):
    check = TwilioStreamCheck()
    with pytest.raises(StreamProtocolError) as raised:
        for frame in frames:
            check.check(frame)
    assert raised.value.field == field and reason in str(raised.value), str(raised.value)
    assert ws_close_for(raised.value)[0] == 1007


def test_mulaw_round_trip_and_speech_detection():
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    back = ulaw_to_pcm16(pcm16_to_ulaw(tone))
    assert np.max(np.abs(back.astype(int) - tone.astype(int))) < 8000 * 0.04  # mu-law keeps ~4% of amplitude
    assert is_speech(pcm16_to_ulaw(tone))
    assert not is_speech(b"\xff" * 160) and not is_speech(pcm16_to_ulaw(np.zeros(160, np.int16)))
    assert not is_speech(b"")
    assert outbound_audio(media(b"\x01\x02")) == b"\x01\x02"
    assert outbound_audio(json.dumps({"event": "clear", "streamSid": "MZ1"})) is None
    assert outbound_audio(b"binary") is None
