"""The I/O-free core of ``voxfleet bench chaos``: which faults to inject (from a seed), how a
caller's experience is judged, what must hold once the run has settled, and the report.

``bench/chaos.py`` runs the processes and the callers and hands this module plain values: what
each caller saw (a :class:`Call`), the session records (``GET /v1/sessions/{id}``), the webhook
events the receiver got, the final ``/v1/capacity`` and the runtime's live bot count.

A caller is *answered* when it was not left in silence: it was told (a phone caller: its stream
closed with 1011 and ``<Connect action>`` answered the lost message and a hang-up; a WebSocket
client: a fatal RTVI error or close 1011), served (the call ran until the caller hung up, or a
start fault was ridden out), refused with an answer (busy message, 503 with Retry-After), or
cut with a closed connection (a call whose media was relayed by a control plane killed with -9).
A call whose bot was faulted mid-call is answered only if it was told.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from voxfleet.end_reasons import FAILED_REASONS
from voxfleet.observability.turns import percentile

BOT_KINDS = ("bot_sigkill", "bot_sigsegv", "bot_sigstop", "bot_raise")  # mid-call, on a live call
START_KINDS = ("template_sigkill", "template_sigstop")  # the agent's template, during a start
KINDS = BOT_KINDS + START_KINDS
RESTART = "control_restart"  # kill -9 of voxfleet serve with calls live, then the same command again
LABELS = {
    "bot_sigkill": "bot SIGKILL mid-call", "bot_sigsegv": "bot SIGSEGV mid-call",
    "bot_sigstop": "bot SIGSTOP mid-call", "bot_raise": "bot raises mid-call",
    "template_sigkill": "template SIGKILL at a start", "template_sigstop": "template SIGSTOP at a start",
    RESTART: "control-plane kill -9 + restart",
}
EXPECTED_END = {"bot_sigkill": "crashed", "bot_sigsegv": "crashed", "bot_sigstop": "crashed",
                "bot_raise": "bot_error"}
ANSWERED = frozenset({"told", "served", "refused", "cut"})


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    transport: str  # the faulted call's: "twilio" or "websocket" ("mixed" for a restart)
    delay_s: float  # bot faults: seconds into the call; template SIGKILL, restart: after a start request


def fault_schedule(n: int, seed: int, *, restart_every: int | None = None, websocket_share: float = 0.3) -> list[Fault]:
    """`n` faults. One in `restart_every` (default max(5, n // 5)), mid-period, is a control-plane
    restart; the others draw their kind from a shuffled bag of every kind, refilled when empty, so
    every kind comes up once in each len(KINDS) draws whatever the seed. Most calls are phone calls."""
    rng = random.Random(seed)
    every = restart_every or max(5, n // 5)
    bag: list[str] = []
    faults = []
    for index in range(n):
        if index % every == every // 2:  # the kill lands this long after a cold start was asked for
            faults.append(Fault(index, RESTART, "mixed", round(rng.uniform(0.0, 0.3), 3)))
            continue
        if not bag:
            bag = sorted(KINDS)
            rng.shuffle(bag)
        kind = bag.pop()
        transport = "websocket" if rng.random() < websocket_share else "twilio"
        delay = rng.uniform(0.0, 0.05) if kind == "template_sigkill" else (
            rng.uniform(0.5, 2.0) if kind in BOT_KINDS else 0.0)
        faults.append(Fault(index, kind, transport, round(delay, 3)))
    return faults


def batches(faults: list[Fault], concurrency: int) -> list[list[Fault]]:
    """Faults run side by side, `concurrency` at a time: a restart alone (its calls are the live
    ones), at most one template fault per batch (a second would find that template restarting)."""
    out: list[list[Fault]] = []
    current: list[Fault] = []
    for fault in faults:
        if fault.kind == RESTART:
            out += [current] if current else []
            out.append([fault])
            current = []
            continue
        if len(current) >= concurrency or (fault.kind in START_KINDS and any(f.kind in START_KINDS for f in current)):
            out.append(current)
            current = []
        current.append(fault)
    return out + ([current] if current else [])


@dataclass
class Call:
    """One caller of the run, as the bench saw it."""

    fault: int  # index of its fault
    kind: str
    transport: str  # twilio, websocket, webrtc
    session_id: str | None = None
    outcome: str = "silent"  # told, served, refused, cut, silent (see the module docstring)
    fault_at: float | None = None  # wall clock of the fault
    answered_at: float | None = None  # wall clock when the caller was told / refused / cut
    detail: str = ""
    kept_talking: bool | None = None  # a WebRTC call live through a restart: answered after it

    @property
    def told_ms(self) -> float | None:
        if self.fault_at is None or self.answered_at is None or self.outcome not in ("told", "cut", "refused"):
            return None
        return round((self.answered_at - self.fault_at) * 1000, 1)

    @property
    def answered(self) -> bool:
        """Not left in silence; a call whose bot was faulted mid-call must have been told."""
        if self.kind in BOT_KINDS and self.fault_at is not None:
            return self.outcome == "told"
        if self.kind == RESTART and self.transport == "webrtc":
            return bool(self.kept_talking)
        return self.outcome in ANSWERED


def judge_phone(*, close_code: int | None, stopped_by_caller: bool, says: list[str] | None, hangup: bool,
                after_error: str | None, lost_message: str, heard_audio: bool) -> tuple[str, str]:
    """A phone call's outcome from what its caller saw: (outcome, detail)."""
    if stopped_by_caller:
        return ("served" if heard_audio else "silent"), f"the caller hung up ({'audio heard' if heard_audio else 'no audio'})"
    if after_error is not None:
        return "cut", f"stream closed {close_code}; <Connect action> unreachable ({after_error})"
    if says == [lost_message] and hangup:
        return ("told" if close_code == 1011 else "cut"), f"stream closed {close_code}; told the lost message"
    if hangup:
        return "cut", f"stream closed {close_code}; hung up with no message"
    return "silent", f"stream closed {close_code}; the action answered neither a message nor a hang-up"


def judge_websocket(*, close_code: int | None, close_reason: str, rtvi: list[dict[str, Any]],
                    heard_audio: bool, closed_by_caller: bool) -> tuple[str, str]:
    """A Pipecat WebSocket client's outcome: (outcome, detail)."""
    fatal = [m for m in rtvi if m.get("type") == "error" and (m.get("data") or {}).get("fatal")]
    if fatal or close_code == 1011:
        what = "fatal RTVI error" if fatal else "no RTVI error"
        return "told", f"{what}, close {close_code} {close_reason!r}"
    if closed_by_caller:
        return ("served" if heard_audio else "silent"), f"the caller hung up ({'audio heard' if heard_audio else 'no audio'})"
    return "cut", f"closed {close_code} {close_reason!r}"


@dataclass(frozen=True)
class Hook:
    """One webhook delivery the receiver got."""

    webhook_id: str
    type: str
    session_id: str
    end_reason: str | None
    signature_ok: bool


def check_webhooks(records: list[dict[str, Any]], hooks: list[Hook]) -> dict[str, Any]:
    """Each session: ``session.started`` once if it was ever answered, exactly one terminal event
    (``session.failed`` iff its end reason is a failure, else ``session.ended``). A delivery repeated
    with the same ``webhook-id`` is at-least-once delivery, not a duplicate event."""
    distinct = {h.webhook_id: h for h in hooks}
    by_session: dict[str, list[Hook]] = {}
    for hook in distinct.values():
        by_session.setdefault(hook.session_id, []).append(hook)
    expected, lost, duplicate, wrong_kind = 0, [], [], []
    for record in records:
        sid = record["sessionId"]
        got = by_session.get(sid, [])
        started = [h for h in got if h.type == "session.started"]
        ends = [h for h in got if h.type in ("session.ended", "session.failed")]
        want_started = "answered" in (record.get("timingsMs") or {})
        expected += 1 + int(want_started)
        if want_started and not started:
            lost.append(f"{sid}: session.started")
        if not ends:
            lost.append(f"{sid}: {'session.failed' if record.get('endReason') in FAILED_REASONS else 'session.ended'}")
        duplicate += [f"{sid}: {len(started)}x session.started"] if len(started) > 1 else []
        duplicate += [f"{sid}: {len(ends)} end events"] if len(ends) > 1 else []
        for hook in ends:
            want = "session.failed" if record.get("endReason") in FAILED_REASONS else "session.ended"
            if hook.type != want:
                wrong_kind.append(f"{sid}: {hook.type} for endReason {record.get('endReason')}")
    known = {r["sessionId"] for r in records}
    return {"expected": expected, "received": len(distinct), "redelivered": len(hooks) - len(distinct),
            "lost": lost, "duplicate": duplicate, "wrong_kind": wrong_kind,
            "bad_signature": sum(1 for h in distinct.values() if not h.signature_ok),
            "unknown_session": sorted({h.session_id for h in distinct.values()} - known)}


def final_checks(calls: list[Call], records: list[dict[str, Any]], hooks: list[Hook], capacity: dict[str, Any],
                 live_bots: int, server_errors: int, processes: int | None = None,
                 templates: int = 0) -> dict[str, Any]:
    """What must hold once everything has settled; ``problems`` lists every breach. `processes`:
    the run's templates and bots alive on the machine (`templates` of them templates); a bot
    process the runtime does not count is a stray."""
    agents = capacity.get("agents", {}).values()
    warm = sum(a["warm"] + a["warming"] for a in agents)
    active = sum(a["active"] for a in agents)
    reservations = capacity["reservations"]
    missing = [r["sessionId"] for r in records if r.get("state") == "missing"]
    not_ended = [r["sessionId"] for r in records if r.get("state") not in ("ended", "missing")]
    no_reason = [r["sessionId"] for r in records if r.get("state") == "ended" and not r.get("endReason")]
    unanswered = [f"{c.kind} {c.transport} {c.session_id}: {c.outcome} ({c.detail})" for c in calls if not c.answered]
    hooks_check = check_webhooks(records, hooks)
    checks = {
        "invariant_ok": bool(capacity.get("invariant_ok")), "reservations": reservations, "warm_bots": warm,
        "active": active, "live_bots": live_bots, "leaked_reservations": max(0, reservations - live_bots),
        "sessions": len(records), "not_ended": not_ended, "no_reason": no_reason, "missing": missing,
        "callers": len(calls), "unanswered": unanswered, "webhooks": hooks_check, "server_5xx": server_errors,
        "stray_processes": 0 if processes is None else max(0, processes - templates - live_bots),
    }
    problems = []
    if not checks["invariant_ok"]:
        problems.append("the capacity ledger's invariant does not hold")
    if reservations != live_bots or (active == 0 and reservations != warm):
        problems.append(f"reservations {reservations} != live bots {live_bots} (warm {warm}, active {active})")
    if checks["stray_processes"]:
        problems.append(f"{checks['stray_processes']} bot process(es) alive that the runtime does not count")
    problems += [f"session {s} never ended" for s in not_ended]
    problems += [f"session {s} is unknown to the server (404), though a start answered it" for s in missing]
    problems += [f"session {s} ended with no reason" for s in no_reason]
    problems += [f"caller not answered: {u}" for u in unanswered]
    problems += [f"webhook event lost: {x}" for x in hooks_check["lost"]]
    problems += [f"webhook event duplicated: {x}" for x in hooks_check["duplicate"]]
    problems += [f"webhook event of the wrong kind: {x}" for x in hooks_check["wrong_kind"]]
    if hooks_check["bad_signature"]:
        problems.append(f"{hooks_check['bad_signature']} webhook deliveries with a bad signature")
    if server_errors:
        problems.append(f"{server_errors} server 5xx answers (503 not-ready excepted)")
    checks["problems"] = problems
    return checks


def summarize(faults: list[Fault], calls: list[Call], checks: dict[str, Any], *, seed: int, seconds: float,
              extra_problems: list[str] | None = None, restart_downtime_s: list[float] | None = None,
              not_ready: dict[str, int] | None = None) -> dict[str, Any]:
    """The report: per fault kind (injected, sessions, told, fault -> told p50/p99), the checks."""
    by_kind: dict[str, Any] = {}
    for kind in (*KINDS, RESTART):
        mine = [c for c in calls if c.kind == kind]
        told = [c.told_ms for c in mine if c.told_ms is not None and c.outcome == "told"]
        outcomes: dict[str, int] = {}
        for c in mine:
            outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
        by_kind[kind] = {"injected": sum(1 for f in faults if f.kind == kind),
                         "sessions": len({c.session_id for c in mine if c.session_id}),
                         "outcomes": outcomes, "told": len(told),
                         "told_ms": {"p50": percentile(told, 0.5), "p99": percentile(told, 0.99)}}
    restart_calls = [c for c in calls if c.kind == RESTART and c.transport == "webrtc"]
    problems = list(checks["problems"]) + list(extra_problems or [])
    report = {
        "seed": seed, "faults": len(faults), "calls": len(calls), "seconds": round(seconds, 1),
        "by_kind": by_kind, "checks": {**checks, "problems": problems},
        "leaked_reservations": checks["leaked_reservations"],
        "lost_webhook_events": len(checks["webhooks"]["lost"]),
        "kept_talking_after_restart": sum(1 for c in restart_calls if c.kept_talking),
        "calls_live_through_restart": len(restart_calls),
        "relayed_calls_cut_by_restart": sum(1 for c in calls if c.kind == RESTART and c.outcome == "cut"),
        "restarts": by_kind[RESTART]["injected"], "restart_downtime_s": restart_downtime_s or [],
        "not_ready": dict(sorted((not_ready or {}).items())), "problems": problems,
        "call_log": [{**asdict(c), "told_ms": c.told_ms, "answered": c.answered} for c in calls],
    }
    report["text"] = render(report)
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def render(report: dict[str, Any]) -> str:
    checks = report["checks"]
    hooks = checks["webhooks"]
    lines = [f"voxfleet bench chaos: {report['faults']} faults (seed {report['seed']}), {report['calls']} calls, "
             f"{report['restarts']} control-plane restarts, {report['seconds']:.0f} s",
             f"{'fault':<34}{'injected':>9}{'sessions':>9}{'told':>6}{'told p50':>10}{'told p99':>10}  outcomes"]
    for kind, row in report["by_kind"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
        lines.append(f"{LABELS[kind]:<34}{row['injected']:>9}{row['sessions']:>9}{row['told']:>6}"
                     f"{_ms(row['told_ms']['p50']):>10}{_ms(row['told_ms']['p99']):>10}  {outcomes}")
    answered = checks["callers"] - len(checks["unanswered"])
    ended = checks["sessions"] - len(checks["not_ended"]) - len(checks["no_reason"]) - len(checks["missing"])
    downtime = report["restart_downtime_s"]
    lines += [
        f"leaked reservations: {report['leaked_reservations']} (reservations {checks['reservations']}, live bots "
        f"{checks['live_bots']}, warm {checks['warm_bots']}, active {checks['active']}; invariant_ok "
        f"{'yes' if checks['invariant_ok'] else 'NO'})",
        f"sessions ended with a reason: {ended}/{checks['sessions']}; callers answered: {answered}/{checks['callers']}",
        f"webhook events: {hooks['expected']} expected, {report['lost_webhook_events']} lost, "
        f"{len(hooks['duplicate'])} duplicated, {len(hooks['wrong_kind'])} of the wrong kind, "
        f"{hooks['bad_signature']} bad signatures ({hooks['redelivered']} redelivered)",
        f"calls kept talking after a restart: {report['kept_talking_after_restart']}/"
        f"{report['calls_live_through_restart']} ({report['restarts']} restarts"
        + (f", down {percentile(downtime, 0.5) or 0:.1f} s p50" if downtime else "") + "); relayed calls cut by a "
        f"restart: {report['relayed_calls_cut_by_restart']}",
        f"server 5xx: {checks['server_5xx']}; starts refused as not ready (503 / phone held), by agent: "
        + (", ".join(f"{agent} {count}" for agent, count in report["not_ready"].items()) or "none"),
        "problems: " + ("none" if not report["problems"] else f"{len(report['problems'])}"),
        *(f"  - {p}" for p in report["problems"][:40]),
    ]
    if len(report["problems"]) > 40:
        lines.append(f"  ... and {len(report['problems']) - 40} more (--json)")
    return "\n".join(lines)

