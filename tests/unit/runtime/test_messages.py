"""The control <-> bot messages and their codec (runtime.messages): pure, no sockets."""

from __future__ import annotations

import json

import pytest

from voxfleet.runtime import messages as m
from voxfleet.runtime.wire import MAX_LINE, WireError

START = m.SessionStart(session_id="s-1", body={"lang": "en"},
                       ice_servers=[{"urls": ["turn:turn.example:3478"], "username": "u", "credential": "c"}])

# One of every kind, with every field set where it has one (the optional ones too).
EXAMPLES: list[m.Message] = [
    m.Fork(bot_id="b-1", start=START),
    m.Fork(bot_id="b-2", preload=[{"factory": "whisper", "args": [1]}]),
    m.Shutdown(),
    m.TemplateReady(agent="assistant", pid=10, import_s=1.5, preload_s=0.25),
    m.Forked(bot_id="b-1", pid=11),
    m.ForkFailed(bot_id="b-3", error="fork: [Errno 11] Resource temporarily unavailable"),
    m.Exited(pid=11, bot_id="b-1", exit_code=1),
    m.Exited(pid=12, signal=9),
    m.Assign(id=1, start=START),
    m.Preload(models=[{"factory": "piper"}]),
    m.Offer(id=2, sdp="v=0\r\n", type="offer", pc_id="pc-1", restart_pc=False, request_data={"k": 1}),
    m.Ice(id=3, pc_id="pc-1", candidates=[{"candidate": "candidate:1", "sdp_mid": "0", "sdp_mline_index": 0}]),
    m.WsOpen(id=4, transport="twilio", path="/v1/telephony/twilio/stream", headers=[("host", "x")],
             client=["10.0.0.1", 4000], scheme="wss", clock="boot-1"),
    m.WsIn(text='{"event":"media"}', at=12.5),
    m.WsIn(bytes="AAE=", at=12.5),
    m.WsClose(code=1011, reason="gone"),
    m.Stop(reason="max_duration"),
    m.BotHello(bot_id="b-1", pid=11, at=1000.0),
    m.BotResume(bot_id="b-1", session_id="s-1", agent="assistant", pid=11, at=1000.0),
    m.WarmReady(warmup_ms=12.5, preloaded=2, preload_problems=["piper: missing"]),
    m.Preloaded(count=3),
    m.ModelLoad(model={"factory": "whisper", "seconds": 0.5}, in_session=True),
    m.Assigned(id=1, session_id="s-1"),
    m.Answer(id=2, sdp="v=0\r\n", type="answer", pc_id="pc-1"),
    m.IceOk(id=3),
    m.WsOpened(id=4),
    m.Error(id=2, message="no ports", code="MEDIA_PORTS_EXHAUSTED", media_ports=[40000, 40099, "10.0.0.2"]),
    m.Event(name="first_audio", at=1001.0),
    m.Heartbeat(),
    m.Turn(v2v_ms=800.0, stages_ms={"stt": 100.0}, speech_end=1000.5, at=1002.0),
    m.Transcript(role="user", text="hello", at=1003.0),
    m.Ttfb(processor="OpenAILLMService#0", seconds=0.2),
    m.Memory(mb=512.5, at=1004.0),
    m.WsOut(text="{}", at=None),
    m.WsOut(bytes="AAE=", at=13.0),
    m.RelayStats(frames=10, p50=0.5, p95=1.0, p99=2.0),
    m.RelayStats(frames=0),
    m.Ended(reason="bot_error", detail="ValueError: x"),
]


def test_every_kind_has_an_example_and_one_name():
    assert {type(e) for e in EXAMPLES} == set(m.KINDS.values())
    assert len(m.KINDS) == len(m.typing.get_args(m.Message))  # no two classes share a kind


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(message):
    line = m.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert m.decode(line) == message


def test_lines_keep_their_shape():
    """Bot -> control lines are what a bot from before this codec sent (it may rejoin a new
    control plane): flat fields, the kind in "t", fields that are None left out."""
    assert json.loads(m.encode(m.Turn(v2v_ms=800.0, stages_ms={"stt": 1.0}, speech_end=None, at=5.0))) == {
        "t": "turn", "v2v_ms": 800.0, "stages_ms": {"stt": 1.0}, "at": 5.0}
    assert json.loads(m.encode(m.Error(id=7, message="bad"))) == {"t": "error", "id": 7, "message": "bad"}
    assert json.loads(m.encode(m.Assign(id=1, start=START)))["start"]["session_id"] == "s-1"


def test_decode_takes_an_integer_where_a_number_is_wanted():
    assert m.decode(b'{"t":"ttfb","processor":"p","seconds":1}') == m.Ttfb(processor="p", seconds=1.0)


@pytest.mark.parametrize("line, error", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "string field 't'"),
    (b'{"t": 5}', "string field 't'"),
    (b'{"t": "hello"}', "unknown message kind 'hello'"),
    (b'{"t": "offer", "id": 1, "type": "offer"}', "'offer' message lacks field 'sdp'"),
    (b'{"t": "offer", "id": "1", "sdp": "", "type": "offer"}', "'offer' message field 'id' must be an integer, got '1'"),
    (b'{"t": "stop", "reason": "x", "why": 1}', "'stop' message has unknown field(s) 'why'"),
    (b'{"t": "forked", "bot_id": "b", "pid": true}', "field 'pid' must be an integer, got True"),
    (b'{"t": "ttfb", "processor": "p", "seconds": "fast"}', "field 'seconds' must be a number"),
    (b'{"t": "assign", "id": 1, "start": "s-1"}', "field 'start' must be an object, got 's-1'"),
    (b'{"t": "assign", "id": 1, "start": {"body": {}}}', "field 'start' lacks field 'session_id'"),
    (b'{"t": "preload", "models": {}}', "field 'models' must be a list"),
    (b'{"t": "ws_open", "id": 1, "transport": "twilio", "headers": [["a"]]}', "field 'headers' must be a list of 2"),
    (b'{"t": "ws_in", "text": 5}', "field 'text' must be a str, got 5"),
])
def test_malformed_messages_are_refused_by_name(line, error):
    with pytest.raises(WireError) as caught:
        m.decode(line)
    assert error in str(caught.value)


def test_oversized_line_is_refused():
    with pytest.raises(WireError, match="over the"):
        m.decode(b'{"t":"stop","reason":"' + b"x" * MAX_LINE + b'"}')


def test_bot_spec_round_trip_and_errors():
    spec = m.BotSpec(agent="assistant", bot="voxfleet.bots.assistant", log_level="INFO", log_format="json",
                     idle_timeout_s=60.0, reconnect_s=15.0, memory_check_s=1.0,
                     advertised_addresses=["203.0.113.5/10.0.0.5"], media_ports=(40000, 40099))
    assert m.BotSpec.from_json(spec.to_json()) == spec
    with pytest.raises(WireError, match="bot spec lacks field 'idle_timeout_s'"):
        m.BotSpec.from_json(json.dumps({"agent": "a", "bot": "b", "log_level": "INFO", "log_format": "text",
                                        "reconnect_s": 1.0, "memory_check_s": 1.0}))
    with pytest.raises(WireError, match="bot spec field 'media_ports' must be a list of 2"):
        m.BotSpec.from_json(spec.to_json().replace("[40000, 40099]", "[40000]"))
    with pytest.raises(WireError, match="bot spec is not JSON"):
        m.BotSpec.from_json("{")
