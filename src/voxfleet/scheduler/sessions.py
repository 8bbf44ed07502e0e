"""Session records and their state machine (pure: no I/O, no asyncio).

    queued --capacity--> starting --offer answered--> active --bot gone--> ended
       \\--queue timeout / hang-up--------\\------- bot gone / timeout --------^

A session ends exactly once; the first end reason recorded wins. The reasons are
:class:`voxfleet.end_reasons.EndReason` (docs/end-reasons.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from voxfleet.end_reasons import EndReason
from voxfleet.observability.turns import TurnBreakdown, stage_summary

QUEUED, STARTING, ACTIVE, ENDED = "queued", "starting", "active", "ended"


@dataclass
class SessionRecord:
    session_id: str
    agent: str
    transport: str
    created_at: float = field(default_factory=time.time)
    state: str = STARTING
    end_reason: EndReason | None = None
    end_detail: str = ""
    exit_code: int | None = None
    exit_signal: int | None = None
    pid: int | None = None
    warm: bool | None = None
    bot_start_ms: float | None = None
    queue_position: int | None = None
    region_requested: str | None = None
    region: str | None = None  # where the session runs (ran), and on which node
    node: str | None = None
    ended_at: float | None = None
    first_audio_at: float | None = None
    stream_started_at: float | None = None  # a media WebSocket's start: phone TTFW counts from here
    relay_ms: dict[str, Any] = field(default_factory=dict)  # media WebSocket relay latency per frame
    turns: list[TurnBreakdown] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)  # what the bot loaded (runtime.model_preload)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    ttfb_s: dict[str, list[float]] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # a phone call's carrier side: carrier, direction, carrierCallId, from, to, status, timeline
    call: dict[str, Any] = field(default_factory=dict)
    # how the session ends, unless its bot fails it, once an action that ends it is under way (a
    # transfer: the carrier closes the stream as it hands the call over, which reads as a hang-up)
    expected_end: tuple[EndReason, str] | None = None
    recording: dict[str, Any] | None = None  # the finished recording (storage/recordings.py metadata)

    def mark(self, name: str, at: float | None = None) -> None:
        """Record a timing, in ms since the session was created."""
        self.timings_ms[name] = round(((at or time.time()) - self.created_at) * 1000, 1)

    def activate(self) -> bool:
        if self.state not in (QUEUED, STARTING):
            return False
        self.state = ACTIVE
        return True

    def end(self, reason: EndReason, detail: str = "", exit_code: int | None = None,
            exit_signal: int | None = None) -> bool:
        """End the session; False if it had already ended (the first reason stays). A reason's
        plain string (as a bot reports it) is taken as its member; ValueError if it names none."""
        if self.state == ENDED:
            return False
        reason = EndReason(reason)
        if self.expected_end is not None and not reason.failed:
            reason, detail = self.expected_end
        self.state = ENDED
        self.end_reason = reason
        self.end_detail = detail
        self.exit_code = exit_code
        self.exit_signal = exit_signal
        self.ended_at = time.time()
        self.mark("ended")
        return True

    def to_public(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "agent": self.agent,
            "transport": self.transport,
            "state": self.state,
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
            "endDetail": self.end_detail or None,
            "exitCode": self.exit_code,
            "exitSignal": self.exit_signal,
            "pid": self.pid,
            "start": None if self.warm is None else ("warm" if self.warm else "cold"),
            "botStartMs": self.bot_start_ms,
            "queuePosition": self.queue_position,
            "regionRequested": self.region_requested,
            "region": self.region,
            "node": self.node,
            "timingsMs": dict(self.timings_ms),
            "latency": self.latency_summary(),
            "transcript": [dict(line) for line in self.transcript],
            **({"call": {**self.call, "timeline": list(self.call.get("timeline", []))}} if self.call else {}),
            "recording": None if self.recording is None else dict(self.recording),
        }

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> "SessionRecord":
        """Rebuild a live record from its stored public form (a session resumed after a restart)."""
        record = cls(session_id=data["sessionId"], agent=data["agent"], transport=data["transport"],
                     created_at=data["createdAt"], state=data["state"], pid=data.get("pid"),
                     bot_start_ms=data.get("botStartMs"))
        record.warm = None if data.get("start") is None else data["start"] == "warm"
        record.region, record.node = data.get("region"), data.get("node")
        record.timings_ms = dict(data.get("timingsMs") or {})
        record.call = dict(data.get("call") or {})
        record.turns = [TurnBreakdown.from_public(t) for t in (data.get("latency") or {}).get("turns") or []]
        return record

    def latency_summary(self) -> dict[str, Any]:
        """TTFW (start request -> bot starts speaking, bot side; for a phone call: the stream's
        start event -> first non-silent audio sent to the caller), voice-to-voice per turn, each
        service's median time to first byte, and a media WebSocket's relay latency per frame."""
        turns = sorted(t.v2v_ms for t in self.turns)
        origin = self.stream_started_at or self.created_at
        return {
            "ttfwMs": None if self.first_audio_at is None else round((self.first_audio_at - origin) * 1000, 1),
            **({"relayMs": self.relay_ms} if self.relay_ms else {}),
            "turnsV2vMs": [t.v2v_ms for t in self.turns],
            "v2vP50Ms": turns[len(turns) // 2] if turns else None,
            # each turn by stage, in ms after the end of the user's speech (observability.turns)
            "turns": [t.to_public() for t in self.turns],
            "stagesMs": stage_summary(self.turns),
            # models the bot built in its session, each prebuilt by its warm bot or not, and how long
            # building it took (runtime.model_preload)
            "models": [{"kind": m.get("kind"), "prebuilt": bool(m.get("prebuilt")), "seconds": m.get("seconds"),
                        "args": m.get("args"), "kwargs": m.get("kwargs")}
                       for m in self.models if m.get("in_session")],
            "ttfbP50Ms": {name: round(sorted(v)[len(v) // 2] * 1000, 1) for name, v in self.ttfb_s.items() if v},
        }


class SessionTable:
    """Live sessions plus a bounded memory of ended ones."""

    def __init__(self, keep_ended: int) -> None:
        self.keep_ended = keep_ended
        self.live: dict[str, SessionRecord] = {}
        self.ended: OrderedDict[str, SessionRecord] = OrderedDict()

    def add(self, record: SessionRecord) -> None:
        self.live[record.session_id] = record

    def get(self, session_id: str) -> SessionRecord | None:
        return self.live.get(session_id) or self.ended.get(session_id)

    def retire(self, record: SessionRecord) -> None:
        self.live.pop(record.session_id, None)
        self.ended[record.session_id] = record
        while len(self.ended) > self.keep_ended:
            self.ended.popitem(last=False)

    def recent(self, limit: int) -> list[SessionRecord]:
        """Live sessions first, then the most recently ended."""
        ended = list(reversed(self.ended.values()))
        return (list(self.live.values()) + ended)[:limit]

    def count(self, state: str | None = None) -> int:
        return sum(1 for r in self.live.values() if state is None or r.state == state)
