"""Which lifecycle webhooks a control plane sends around a restart: a session it resumed is not
announced again as started, and one whose bot never rejoined gets its session.failed. Stand-ins
for the recorder, the outbox and the store record what they are asked to do."""

from __future__ import annotations

import asyncio
from typing import Any

from voxfleet.config import AgentSpec, Settings
from voxfleet.control.server import close_resume_window, lifecycle_hook, webhook_sender
from voxfleet.scheduler.sessions import SessionRecord, SessionTable

URL = "http://127.0.0.1:9/hooks"


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def enqueue(self, kind: str, url: str, payload: dict[str, Any]) -> None:
        self.sent.append((kind, url, payload))


class Recorder:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    def record(self, record: SessionRecord) -> None:
        self.recorded.append(record.state)


def settings() -> Settings:
    return Settings(agents=[AgentSpec(name="tone", bot="voxfleet.bots.tone", webhook_url=URL),
                            AgentSpec(name="quiet", bot="voxfleet.bots.tone")])


def kinds(outbox: Outbox) -> list[str]:
    return [kind for kind, _, _ in outbox.sent]


def test_a_resumed_session_is_not_announced_twice():
    outbox, recorder = Outbox(), Recorder()
    on_change = lifecycle_hook(settings(), recorder, outbox)  # type: ignore[arg-type]
    record = SessionRecord(session_id="s1", agent="tone", transport="webrtc", state="active")
    record.timings_ms = {"answered": 120.0, "resumed": 9000.0}  # answered before the restart
    on_change(record)
    record.end("hangup")
    on_change(record)
    assert kinds(outbox) == ["session.ended"] and recorder.recorded == ["active", "ended"]


def test_a_session_answered_after_it_was_resumed_is_announced():
    outbox = Outbox()
    on_change = lifecycle_hook(settings(), Recorder(), outbox)  # type: ignore[arg-type]
    record = SessionRecord(session_id="s2", agent="tone", transport="webrtc", state="active")
    record.timings_ms = {"resumed": 50.0, "answered": 4000.0}  # starting at the restart, answered since
    on_change(record)
    assert kinds(outbox) == ["session.started"]


class Store:
    def __init__(self, unfinished: list[str]) -> None:
        self.unfinished = unfinished
        self.kept: set[str] = set()

    async def end_unfinished(self, reason: str, detail: str, keep: Any = frozenset()) -> list[str]:
        self.kept = set(keep)
        return [s for s in self.unfinished if s not in keep]


class Service:
    def __init__(self) -> None:
        self.table = SessionTable(10)
        self.started = False

    def start(self) -> None:
        self.started = True


def stored(session_id: str, agent: str = "tone") -> dict[str, Any]:
    return SessionRecord(session_id=session_id, agent=agent, transport="twilio", state="starting").to_public()


async def test_sessions_whose_bot_never_rejoined_get_their_session_failed():
    outbox, service = Outbox(), Service()
    live_now = SessionRecord(session_id="new", agent="tone", transport="webrtc")  # started in the window
    service.table.add(live_now)
    resumable = {"gone": stored("gone"), "back": stored("back"), "quiet": stored("quiet", "quiet")}
    store = Store(["gone", "back", "quiet", "new"])
    await close_resume_window(service, store, resumable, {"back"}, asyncio.Event(), 0.01,  # type: ignore[arg-type]
                              webhook_sender(settings(), outbox))  # type: ignore[arg-type]
    assert store.kept == {"back", "new"}  # this run's own session is not ended with the old run's
    assert [(kind, payload["sessionId"], payload["endReason"]) for kind, _, payload in outbox.sent] == [
        ("session.failed", "gone", "control_restart")]  # "quiet" has no webhook
    assert outbox.sent[0][2]["endDetail"] == "the bot did not rejoin after a restart of the control plane"
    assert service.started
