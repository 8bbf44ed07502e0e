"""End reasons: every reason the code produces is an EndReason member, and each member is
produced somewhere; the members keep their plain-string form; docs/end-reasons.md lists them all."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from voxfleet.end_reasons import FAILED_REASONS, MEANINGS, EndReason
from voxfleet.scheduler.sessions import SessionRecord
from voxfleet.webhooks.events import event_for

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "voxfleet"

# Calls that take an end reason, and the position of the reason among their arguments.
REASON_ARGUMENT = {"end": 0, "stop": 0, "BotExit": 0, "RelayEnd": 0, "end_unfinished": 0,
                   "hang_up": 1, "leave_queue": 1, "Stop": 1, "Expire": 1, "CallEnded": 0}


def _strings(node: ast.expr) -> list[str]:
    """The reasons an expression can evaluate to, spelled as literals or members
    (`"a" if c else EndReason.B`, `x or "a"`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "EndReason":
        return [EndReason[node.attr].value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [s for value in node.values for s in _strings(value)]
    if isinstance(node, ast.Call) and _called(node) == "get" and len(node.args) == 2:  # message.get("reason", X)
        return _strings(node.args[1])
    return []


def _called(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def reasons_in(tree: ast.AST) -> set[str]:
    """Reasons spelled as literals: arguments of the calls above (a ``message.get("reason", X)``
    there counts X), their own ``reason=X`` defaults, and the reason of a bot host's ``outcome()``.
    (A WebSocket close frame's ``reason`` is free text, not an end reason: not counted.)"""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called(node)
            index = REASON_ARGUMENT.get(name or "")
            if index is not None and len(node.args) > index:
                found.update(_strings(node.args[index]))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args
            for arg, default in zip(arguments[len(arguments) - len(node.args.defaults):], node.args.defaults):
                if arg.arg == "reason" and node.name in REASON_ARGUMENT:
                    found.update(_strings(default))
            if node.name == "outcome":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                        found.update(_strings(ret.value.elts[1]))
    return found


def produced_reasons() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        found |= reasons_in(ast.parse(path.read_text(), str(path)))
    return found


def test_the_scan_sees_each_way_a_reason_is_spelled():
    tree = ast.parse("""
def hang_up(session_id, reason="shutdown"):
    record.end("unplaceable" if failed else "start_failed", "detail")
    bot.stop(requested or "hangup")
    service.hang_up(session_id, "busy")
    host.stop(message.get("reason", "bot_ended"))
    BotExit("crashed", None)
    RelayEnd(EndReason.PROTOCOL_ERROR, "bad frame")
def close(code=1000, reason="caller closed the stream"):
    detail = message.get("reason", "")
def outcome(self):
    return 0, "bot_error", ""
""")
    assert reasons_in(tree) == {"shutdown", "unplaceable", "start_failed", "hangup", "busy", "bot_ended",
                                "crashed", "protocol_error", "bot_error"}


def test_every_reason_the_code_produces_is_a_member_and_every_member_is_produced():
    produced = produced_reasons()
    assert produced - set(EndReason) == set(), "reasons the code produces that EndReason lacks"
    assert set(EndReason) - produced == set(), "EndReason members nothing produces"


def test_members_are_their_plain_strings_on_the_wire():
    assert EndReason("hangup") is EndReason.HANGUP and EndReason.HANGUP == "hangup"
    assert str(EndReason.MAX_DURATION) == f"{EndReason.MAX_DURATION}" == "max_duration"
    assert json.dumps({"endReason": EndReason.NODE_LOST}) == '{"endReason": "node_lost"}'
    counter = Counter("ended", "Sessions ended", ["agent", "reason"], registry=(registry := CollectorRegistry()))
    counter.labels("assistant", EndReason.MEMORY_LIMIT).inc()
    assert 'ended_total{agent="assistant",reason="memory_limit"} 1.0' in generate_latest(registry).decode()


def test_a_record_takes_a_reported_string_as_its_member_and_names_an_unknown_one():
    record = SessionRecord(session_id="s", agent="a", transport="webrtc")
    assert record.end("crashed", "killed by SIGKILL", exit_signal=9)  # as a bot reports it
    assert record.end_reason is EndReason.CRASHED
    assert json.loads(json.dumps(record.to_public()))["endReason"] == "crashed"
    with pytest.raises(ValueError, match="'hung_up' is not a valid EndReason"):
        SessionRecord(session_id="t", agent="a", transport="webrtc").end("hung_up")


def test_failed_reasons_send_session_failed():
    for reason in EndReason:
        session = {"sessionId": "s", "agent": "a", "transport": "webrtc", "createdAt": 1.0, "endedAt": 2.0,
                   "state": "ended", "endReason": reason.value}
        kind, payload = event_for(session, True)
        assert kind == ("session.failed" if reason.failed else "session.ended") and payload["endReason"] == reason
    assert FAILED_REASONS == {EndReason.START_FAILED, EndReason.BOT_ERROR, EndReason.CRASHED,
                              EndReason.MEMORY_LIMIT, EndReason.CONTROL_RESTART, EndReason.CONTROL_LOST,
                              EndReason.MEDIA_PORTS_EXHAUSTED, EndReason.NODE_LOST}


def test_the_docs_table_lists_every_reason_with_its_meaning():
    rows = re.findall(r"^\| `([a-z_]+)` \| (yes)? \| (.+) \|$", (ROOT / "docs" / "end-reasons.md").read_text(),
                      re.MULTILINE)
    assert [(reason, bool(failed), meaning) for reason, failed, meaning in rows] == [
        (r.value, r.failed, r.meaning) for r in EndReason]
    assert set(MEANINGS) == set(EndReason)
