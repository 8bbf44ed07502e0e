"""Pure cores: wire format, session state machine, signaling checks, config, error mapping."""

from __future__ import annotations

import pytest

from voxfleet.config import load_settings
from voxfleet.control.errors import status_for
from voxfleet.exceptions import (
    AgentNotFound,
    BotError,
    ConfigError,
    InvalidRequest,
    NotReady,
    RequestTooLarge,
    SessionConflict,
    SessionNotFound,
    SignalingTimeout,
)
from voxfleet.runtime import wire
from voxfleet.scheduler.sessions import ACTIVE, ENDED, STARTING, SessionRecord, SessionTable
from voxfleet.transports.ice import validate_addresses
from voxfleet.transports.signaling import check_candidates, check_offer_sdp


def test_wire_round_trip():
    line = wire.encode("offer", id=3, sdp="v=0")
    assert line.endswith(b"\n")
    assert wire.decode(line) == {"t": "offer", "id": 3, "sdp": "v=0"}


@pytest.mark.parametrize("line,reason", [
    (b"{nope", "not JSON"),
    (b"[1,2]", "string field 't'"),
    (b'{"t": 5}', "string field 't'"),
])
def test_wire_rejects_bad_lines(line, reason):
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(line)


def test_wire_refuses_to_shadow_kind():
    with pytest.raises(ValueError, match="reserved"):
        wire.encode("hello", t=1)


def test_session_ends_once_and_first_reason_wins():
    record = SessionRecord(session_id="s", agent="a", transport="webrtc")
    assert record.state == STARTING
    assert record.activate() and record.state == ACTIVE
    assert not record.activate()
    assert record.end("crashed", "killed by SIGKILL", exit_signal=9)
    assert not record.end("hangup")
    assert (record.state, record.end_reason, record.exit_signal) == (ENDED, "crashed", 9)
    assert "ended" in record.timings_ms
    public = record.to_public()
    assert public["endReason"] == "crashed" and public["endDetail"] == "killed by SIGKILL"


def test_session_table_keeps_a_bounded_history():
    table = SessionTable(keep_ended=2)
    records = [SessionRecord(session_id=str(i), agent="a", transport="webrtc") for i in range(4)]
    for record in records:
        table.add(record)
    assert table.count() == 4
    for record in records:
        record.end("hangup")
        table.retire(record)
    assert table.count() == 0
    assert table.get("0") is None and table.get("3") is records[3]


SDP = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
       "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n")


def test_offer_checks_accept_a_real_offer_shape():
    check_offer_sdp(SDP, "offer")


@pytest.mark.parametrize("sdp,sdp_type,field,fragment", [
    (SDP, "answer", "type", "must be 'offer'"),
    ("", "offer", "sdp", "must start with 'v=0'"),
    (SDP.replace("a=ice-ufrag:abcd\r\n", ""), "offer", "sdp", "no ICE credentials"),
    (SDP.replace("a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n", ""), "offer", "sdp", "no DTLS fingerprint"),
    ("v=0\r\n" + "a=x\r\n" * 10000, "offer", "sdp", "longer than"),
])
def test_offer_checks_name_field_and_reason(sdp, sdp_type, field, fragment):
    with pytest.raises(InvalidRequest) as caught:
        check_offer_sdp(sdp, sdp_type)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_candidate_checks():
    check_candidates([{"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host"}, {"candidate": ""}])
    with pytest.raises(InvalidRequest, match=r"candidates\[1\]\.candidate"):
        check_candidates([{"candidate": ""}, {"candidate": "candidate:zzz"}])


def test_invalid_request_message_truncates_long_values():
    message = str(InvalidRequest("sdp", "x" * 500, "is bad"))
    assert message.startswith("sdp: is bad (got 'xxx") and len(message) < 120


def test_advertised_addresses_are_validated():
    assert validate_addresses(["127.0.0.1", "::1"]) == ["127.0.0.1", "::1"]
    with pytest.raises(ValueError, match="'my-host' is not an IP address"):
        validate_addresses(["my-host"])


def test_config_defaults_and_errors(monkeypatch):
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    settings = load_settings()
    assert settings.port == 7860 and settings.agents[0].name == "assistant"
    assert settings.cors_origins == []  # same-origin needs none; private routes never answer CORS
    assert "api_key" not in repr(settings.llm) or "not-needed" not in repr(settings.llm)
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=70000)
    with pytest.raises(ConfigError, match="agent name 'Bad Name'"):
        load_settings(agents=[{"name": "Bad Name", "bot": "x.py"}])
    with pytest.raises(ConfigError, match="repeated: a"):
        load_settings(agents=[{"name": "a", "bot": "x.py"}, {"name": "a", "bot": "y.py"}])


def test_config_from_env_and_toml(monkeypatch, tmp_path):
    toml = tmp_path / "voxfleet.toml"
    toml.write_text('port = 9000\n[[agents]]\nname = "support"\nbot = "bots/support.py"\n')
    monkeypatch.setenv("VOXFLEET_CONFIG", str(toml))
    monkeypatch.setenv("VOXFLEET_LLM__BASE_URL", "http://127.0.0.1:9999/v1")
    settings = load_settings()
    assert settings.port == 9000
    assert [a.name for a in settings.agents] == ["support"]
    assert settings.llm.base_url == "http://127.0.0.1:9999/v1"
    assert load_settings(port=9100).port == 9100  # CLI flags win


@pytest.mark.parametrize("exc,status", [
    (InvalidRequest("f", 1, "bad"), 400),
    (RequestTooLarge(10, 5), 413),
    (AgentNotFound("x", ["a"]), 404),
    (SessionNotFound("s"), 404),
    (SessionConflict("s", "ended", "offer"), 409),
    (NotReady("warming"), 503),
    (BotError("gone"), 502),
    (SignalingTimeout("s", 1.0), 504),
])
def test_every_error_has_one_status(exc, status):
    assert status_for(exc) == status


def test_json_logs_carry_the_session_id(capsys):
    import json
    import logging

    from voxfleet.observability.logs import configure_logging

    configure_logging("INFO", process="bot:abc-123", log_format="json")
    try:
        logging.getLogger("voxfleet.test").warning("hello %s", "world")
        from loguru import logger

        logger.info("from pipecat")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        configure_logging("INFO", process="control", log_format="text")
    assert lines[0]["msg"] == "hello world" and lines[0]["session_id"] == "abc-123" and lines[0]["level"] == "WARNING"
    assert lines[1]["msg"] == "from pipecat" and lines[1]["session_id"] == "abc-123"
