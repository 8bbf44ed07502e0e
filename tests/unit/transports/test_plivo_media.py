"""Plivo Audio Streams (transports/plivo_media.py) and Plivo's signature V3 with replay and expiry
(transports/plivo_auth.py): pure, no event loop."""

import base64
import json

import numpy as np
import pytest
from pipecat.runner.utils import _detect_transport_type_from_message

from voxfleet.bench.plivo_caller import parse_plivo_xml, v3_signature
from voxfleet.control.errors import ws_close_for
from voxfleet.exceptions import StreamProtocolError, TelephonySignatureInvalid
from voxfleet.transports.plivo_auth import NonceLedger, verify_request
from voxfleet.transports.plivo_media import (
    TOKEN_HEADER,
    PlivoStreamCheck,
    audio_is_speech,
    extra_headers_for,
    outbound_audio,
    parse_extra_headers,
    without_token,
)
from voxfleet.transports.twilio_media import FRAME_BURST, pcm16_to_ulaw

TOKEN = "0b7f9c1e-5a4d-4a57-9c39-3f0c7e1d2a6b.1800000000.Qk9vX3Rva2Vu.Zm9yZ2VyeS1wcm9vZi1tYWM"


def start(extra: str | None = None, **fields: object) -> str:
    body = {"callId": "c0ffee00-0000-4000-8000-000000000001", "streamId": "5eed0000-0000-4000-8000-000000000002",
            "accountId": "MAXXXXXXXXXXXXXXXXXX", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}, **fields}
    message: dict[str, object] = {"event": "start", "sequenceNumber": 1, "start": body}
    message["extra_headers"] = extra_headers_for(TOKEN) if extra is None else extra
    return json.dumps(message)


STREAM = "5eed0000-0000-4000-8000-000000000002"


def media(payload: bytes = b"\xff" * 160, stream: str = STREAM, top: dict | None = None, **fields: object) -> str:
    media_obj = {"track": "inbound", "timestamp": "1705312200000", "chunk": 1,
                 "payload": base64.b64encode(payload).decode(), **fields}
    if "payload_text" in media_obj:
        media_obj["payload"] = media_obj.pop("payload_text")
    return json.dumps({"event": "media", "sequenceNumber": 2, "streamId": stream, "media": media_obj, **(top or {})})


def started() -> PlivoStreamCheck:
    check = PlivoStreamCheck()
    check.check(start())
    return check


def test_a_documented_stream_passes_and_gives_its_ids_and_token():
    check = started()
    assert check.call_id == "c0ffee00-0000-4000-8000-000000000001" and check.stream_id == STREAM
    assert check.stream_token() == TOKEN
    for frame in (media(), media(chunk="7", timestamp=1705312200020),
                  json.dumps({"event": "dtmf", "sequenceNumber": 3, "streamId": STREAM,
                              "dtmf": {"track": "inbound", "digit": "#", "timestamp": "1705312200040"}}),
                  json.dumps({"event": "playedStream", "sequenceNumber": 4, "streamId": STREAM, "name": "greeting"}),
                  json.dumps({"event": "playedStream", "name": "greeting"}),  # a variant without streamId
                  json.dumps({"event": "clearedAudio", "sequenceNumber": 5, "streamId": STREAM}),
                  media(top={"extra_headers": "voxfleettoken=00"})):  # the reference repeats extra_headers in media
        assert check.check(frame)["event"]


@pytest.mark.parametrize("frames, field, reason", [
    ([media()], "event", "arrived before start"),
    ([start(), start()], "event", "a stream starts once"),
    ([json.dumps({"event": "stop"})], "event", "must be one of start"),  # Plivo has no stop message
    ([json.dumps({"event": "connected"})], "event", "must be one of"),
    ([b"\x00\x01"], "frame", "binary frames"),
    (["{nope"], "frame", "not JSON"),
    (["[1, 2]"], "frame", "not a JSON object"),
    (["[" * 5000 + "]" * 5000], "frame", "nested too deeply"),
    ([start(), media(payload_text="%%%")], "media.payload", "not valid base64"),
    ([start(), json.dumps({"event": "media", "streamId": STREAM, "media": {"payload": 5}})], "media.payload", "base64"),
    ([start(), json.dumps({"event": "media", "streamId": STREAM, "media": "AAAA"})], "media", "must be an object"),
    ([start(), media(stream="another-stream")], "streamId", "is not this stream's"),
    ([start(), media(track="both")], "media.track", "inbound or outbound"),
    ([start(), media(chunk=-1)], "media.chunk", "whole number"),
    ([start(), media(timestamp="soon")], "media.timestamp", "whole number"),
    ([start(), json.dumps({"event": "dtmf", "streamId": STREAM, "dtmf": {"digit": "12"}})], "dtmf.digit", "one of"),
    ([start(), json.dumps({"event": "dtmf", "streamId": STREAM})], "dtmf.digit", "one of"),
    ([start(), json.dumps({"event": "playedStream", "streamId": STREAM, "name": ["x"]})], "name", "string"),
    ([start(), json.dumps({"event": "clearedAudio", "sequenceNumber": "x", "streamId": STREAM})],
     "sequenceNumber", "whole number"),
    ([start(callId="")], "start.callId", "non-empty"),
    ([start(streamId=None)], "start.streamId", "non-empty"),
    ([start(callId="x" * 200)], "start.callId", "at most 128"),
    ([start(accountId=7)], "start.accountId", "string"),
    ([start(tracks="inbound")], "start.tracks", "list"),
    ([start(tracks=["both"])], "start.tracks", "list"),
    ([start(mediaFormat=["audio/x-mulaw"])], "start.mediaFormat", "must be an object"),
    ([start(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 8000})], "start.mediaFormat.encoding", "x-mulaw"),
    ([start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000"})], "start.mediaFormat.sampleRate", "8000"),
    ([start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 16000})], "start.mediaFormat.sampleRate", "8000"),
    ([json.dumps({"event": "start", "start": "x"})], "start", "must be an object"),
    ([json.dumps({"event": "start", "start": {}, "extra_headers": {"a": 1}})], "extra_headers", "string"),
    ([start(), media(b"\xff" * 20000)], "frame", "over 16384"),
])
def test_every_malformed_frame_names_its_field(frames, field, reason):
    check = PlivoStreamCheck()
    with pytest.raises(StreamProtocolError) as raised:
        for frame in frames:
            check.check(frame)
    assert raised.value.field == field and reason in str(raised.value), str(raised.value)
    code, close_reason = ws_close_for(raised.value)
    assert code == 1007 and len(close_reason.encode()) <= 123 and field in close_reason


def test_a_stream_faster_than_plivo_ever_sends_is_closed():
    check = PlivoStreamCheck()
    check.check(start(), 0.0)
    for _ in range(FRAME_BURST - 1):
        check.check(media(), 0.0)  # a burst (a network hiccup) is absorbed
    with pytest.raises(StreamProtocolError, match="frames/s"):
        check.check(media(), 0.0)


def test_a_missing_or_mangled_token_is_left_for_the_token_check_to_refuse():
    check = PlivoStreamCheck()
    check.check(start(extra="somethingelse=1"))
    assert check.stream_token() is None
    check = PlivoStreamCheck()
    check.check(start(extra=f"{TOKEN_HEADER}=zz-not-hex"))
    assert check.stream_token() == "zz-not-hex"


def test_the_token_rides_as_letters_and_digits_and_is_stripped_before_the_bot():
    value = extra_headers_for(TOKEN)
    assert value.replace("=", "").isalnum() and len(value) <= 512
    assert parse_extra_headers(f"a=1;{value},b=2") == {"a": "1", TOKEN_HEADER: TOKEN.encode().hex(), "b": "2"}
    seen = json.loads(without_token(start(extra=f"{value},userId=12345")))
    assert seen["extra_headers"] == "userId=12345"
    alone = json.loads(without_token(start()))
    assert "extra_headers" not in alone and TOKEN.encode().hex() not in json.dumps(alone)
    # what the bot gets is still what Pipecat's create_transport recognises as Plivo
    assert _detect_transport_type_from_message(alone) == "plivo"


def test_outbound_speech_is_audible_play_audio_only():
    check = PlivoStreamCheck()
    tone = (np.sin(np.arange(160) / 3) * 8000).astype(np.int16)

    def play(payload: bytes, content_type: str = "audio/x-mulaw") -> str:
        return json.dumps({"event": "playAudio", "streamId": STREAM, "media": {
            "contentType": content_type, "sampleRate": 8000, "payload": base64.b64encode(payload).decode()}})

    assert check.outbound_speech(play(pcm16_to_ulaw(tone)))
    assert not check.outbound_speech(play(b"\xff" * 160))  # mu-law silence
    assert check.outbound_speech(play(tone.astype("<i2").tobytes(), "audio/x-l16"))
    assert not check.outbound_speech(play(np.zeros(160, "<i2").tobytes(), "audio/x-l16"))
    assert not check.outbound_speech(json.dumps({"event": "clearAudio", "streamId": STREAM}))
    assert not check.outbound_speech(b"\x00")
    assert outbound_audio('{"event": "playAudio", "media": {}}') is None
    assert not audio_is_speech(b"", "audio/x-l16")


# -- signature V3, replays, expiry ---------------------------------------------------------------
AUTH = "plivo-auth-token-for-tests"
URL = "https://voice.example.com/v1/telephony/plivo/tone"
PARAMS = {"CallUUID": "c0ffee00", "From": "14155550006", "To": "14155550001", "Direction": "inbound"}


def headers(url: str = URL, params: dict[str, str] = PARAMS, nonce: str = "05429567804466091622",
            token: str = AUTH) -> dict[str, str]:
    sig = v3_signature(token, "POST", url, params, nonce)
    return {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}


def refused(url: str = URL, params: dict[str, str] = PARAMS, hdrs: dict[str, str] | None = None,
            ledger: NonceLedger | None = None, now: float = 1000.0) -> str:
    with pytest.raises(TelephonySignatureInvalid) as raised:
        verify_request(AUTH, ledger or NonceLedger(), "POST", url, params, hdrs if hdrs is not None else headers(url),
                       now)
    return str(raised.value)


def test_a_signed_request_passes_once_and_its_replay_is_refused():
    ledger = NonceLedger(ttl_s=600, max_entries=10)
    verify_request(AUTH, ledger, "POST", URL, PARAMS, headers(), 1000.0)
    assert "replayed" in refused(ledger=ledger, now=1001.0)
    verify_request(AUTH, ledger, "POST", URL, PARAMS, headers(nonce="another"), 1002.0)


def test_forged_requests_are_refused_with_the_reason():
    assert "does not match" in refused(hdrs=headers(token="someone-elses-token"))
    assert "does not match" in refused(params={**PARAMS, "From": "19995550000"})  # tampered with
    assert "does not match" in refused(hdrs={**headers(), "X-Plivo-Signature-V3": "\u00e9t\u00e9"})
    assert "header missing" in refused(hdrs={"X-Plivo-Signature-V3-Nonce": "1"})
    assert "Nonce header missing" in refused(hdrs={"X-Plivo-Signature-V3": headers()["X-Plivo-Signature-V3"]})
    assert "malformed" in refused(hdrs={**headers(), "X-Plivo-Signature-V3-Nonce": "n" * 500})
    # the main account's signature is accepted in its place; a comma-separated list is too
    sig = headers()["X-Plivo-Signature-V3"]
    verify_request(AUTH, NonceLedger(), "POST", URL, PARAMS,
                   {"X-Plivo-Signature-Ma-V3": f"old,{sig}", "X-Plivo-Signature-V3-Nonce": "05429567804466091622"},
                   1000.0)


def test_voxfleets_own_urls_expire():
    url = f"{URL}/ended?session=s1&exp=999"
    assert "expired" in refused(url=url, hdrs=headers(url), now=1000.0)
    verify_request(AUTH, NonceLedger(), "POST", url, PARAMS, headers(url), 998.0)
    url = f"{URL}?attempt=1&exp=soon"
    assert "not a time" in refused(url=url, hdrs=headers(url))


def test_the_nonce_ledger_is_bounded_in_time_and_size():
    ledger = NonceLedger(ttl_s=10, max_entries=3)
    assert ledger.use("a", 0) and not ledger.use("a", 5)
    assert ledger.use("a", 10)  # forgotten after its time
    for nonce in "bcd":
        assert ledger.use(nonce, 11)
    assert len(ledger.seen) == 3 and "a" not in ledger.seen  # the oldest dropped first


def test_the_markup_parses_as_plivo_reads_it():
    answer = parse_plivo_xml(
        '<Response><Stream bidirectional="true" keepCallAlive="true" extraHeaders="k=1">wss://h/s</Stream>'
        '<Redirect method="POST">https://h/e?session=abc&amp;exp=1</Redirect></Response>')
    assert answer.stream_url == "wss://h/s" and answer.extra_headers == "k=1" and answer.session == "abc"
    held = parse_plivo_xml('<Response><Speak>busy</Speak><Wait length="2"/><Redirect>https://h/a</Redirect></Response>')
    assert held.speaks == ["busy"] and held.wait_s == 2 and held.redirect == "https://h/a" and not held.hangup
    with pytest.raises(ValueError, match="<Response>"):
        parse_plivo_xml("<Other/>")
