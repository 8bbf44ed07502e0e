"""Pure parts of telephony: stream tokens, Twilio frame checks, mu-law, TwiML parsing, close codes."""

import base64
import json

import numpy as np
import pytest

from voxfleet.bench.twilio_caller import parse_twiml
from voxfleet.control.errors import ws_close_for
from voxfleet.exceptions import StreamProtocolError, StreamTokenInvalid
from voxfleet.transports.stream_tokens import StreamTokens
from voxfleet.transports.twilio_media import (
    FRAME_BURST,
    TwilioStreamCheck,
    is_speech,
    outbound_audio,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

SECRET = b"0123456789abcdef0123"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_admits_its_session_once():
    tokens = StreamTokens(SECRET, ttl_s=30, clock=Clock())
    token = tokens.mint("session-1")
    assert tokens.consume(token) == "session-1"
    with pytest.raises(StreamTokenInvalid, match="already used"):
        tokens.consume(token)


def test_token_expires():
    clock = Clock()
    tokens = StreamTokens(SECRET, ttl_s=30, clock=clock)
    token = tokens.mint("s")
    clock.now += 31
    with pytest.raises(StreamTokenInvalid, match="expired"):
        tokens.consume(token)


@pytest.mark.parametrize("token, reason", [
    (None, "missing"), ("", "missing"), ("abc", "malformed"), ("a.b.c.d.e", "malformed"),
    (12345, "not a short ASCII string"), (["a.b.c.d"], "not a short ASCII string"),
    ("s.1.n.m\u00e9", "not a short ASCII string"), ("a" * 300, "not a short ASCII string"),
])
def test_token_malformed_or_missing(token, reason):
    with pytest.raises(StreamTokenInvalid, match=reason):
        StreamTokens(SECRET, 30).consume(token)


def test_token_from_another_secret_or_edited_is_forged():
    theirs = StreamTokens(b"another-secret-of-16b", 30).mint("s")
    ours = StreamTokens(SECRET, 30)
    with pytest.raises(StreamTokenInvalid, match="forged"):
        ours.consume(theirs)
    session, expiry, nonce, mac = ours.mint("s").split(".")
    with pytest.raises(StreamTokenInvalid, match="forged"):
        ours.consume(".".join(["other-session", expiry, nonce, mac]))


def test_used_tokens_are_forgotten_after_expiry():
    clock = Clock()
    tokens = StreamTokens(SECRET, ttl_s=5, clock=clock)
    for i in range(300):
        tokens.consume(tokens.mint(f"s{i}"))
    clock.now += 10
    tokens.consume(tokens.mint("late"))
    assert len(tokens.used) == 1


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


def test_close_codes_come_from_one_table():
    assert ws_close_for(StreamTokenInvalid("stream token expired")) == (4003, "STREAM_TOKEN_INVALID: stream token expired")


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


def test_twiml_parsing_of_what_we_answer():
    answer = parse_twiml('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Busy</Say><Pause length="2" />'
                         '<Redirect method="POST">https://x/v1/telephony/twilio/a?session=1</Redirect></Response>')
    assert answer.says == ["Busy"] and answer.pause_s == 2 and answer.redirect.endswith("session=1")
    assert not answer.hangup and answer.stream_url is None


@pytest.mark.parametrize("overrides, names", [
    ({"public_url": "ftp://voice.example.com"}, "public_url"),
    ({"public_url": "https://voice.example.com/?x=1"}, "public_url"),
    ({"telephony": {"when_busy": "maybe"}}, "telephony.when_busy"),
    ({"telephony": {"hold_check_s": 0}}, "telephony.hold_check_s"),
    ({"telephony": {"stream_token_secret": "short"}}, "telephony.stream_token_secret"),
])
def test_bad_telephony_settings_name_the_field(overrides, names, monkeypatch):
    from voxfleet.config import load_settings
    from voxfleet.exceptions import ConfigError

    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_settings(**overrides)


def test_twilio_credentials_come_from_twilios_own_variables(monkeypatch):
    from voxfleet.config import load_settings

    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cr3t-auth")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("VOXFLEET_PUBLIC_URL", "https://voice.example.com/")
    settings = load_settings()
    assert (settings.twilio_auth_token, settings.twilio_account_sid) == ("s3cr3t-auth", "AC1")
    assert settings.public_url == "https://voice.example.com"
    assert "s3cr3t-auth" not in repr(settings)


def test_relay_latency_samples_stay_bounded_and_count_every_frame():
    from voxfleet.runtime.streams import LatencySamples

    samples = LatencySamples(keep=100)
    for i in range(10_000):
        samples.add(float(i % 100))
    summary = samples.summary()
    assert summary["frames"] == 10_000 and len(samples.samples) == 100
    assert 30 <= summary["p50"] <= 70 and summary["p99"] >= 90
    assert LatencySamples().summary() == {"frames": 0}
