"""The store on both databases: migrations, sessions, events, API keys, outbox."""

from __future__ import annotations

import stat
import time

import pytest

from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import ConfigError
from voxfleet.observability.turns import TurnBreakdown
from voxfleet.scheduler.sessions import SessionRecord
from voxfleet.storage.store import Store, database_url as normalise


def record(session_id: str = "s1") -> dict:
    r = SessionRecord(session_id=session_id, agent="assistant", transport="webrtc")
    r.warm, r.bot_start_ms, r.pid = True, 6.5, 1234
    r.turns = [TurnBreakdown(speech_end=r.created_at + 5, stages_ms={"vad_stop": 200.0, "audio_out": 850.0}),
               TurnBreakdown(speech_end=r.created_at + 9, stages_ms={"audio_out": 910.0})]
    r.transcript = [{"role": "bot", "text": "Hello!", "at": r.created_at}]
    r.first_audio_at = r.created_at + 0.28
    return r.to_public()


async def test_sessions_round_trip_and_restart_marks_unfinished(database_url):
    store = Store(database_url)
    await store.migrate()
    await store.migrate()  # idempotent
    live = record("live-1")
    await store.save_session(live)
    ended = record("done-1")
    ended.update(state="ended", endReason="hangup", endedAt=time.time(), regionRequested="eu", region="us",
                 node="10.0.2.9")
    await store.save_session(ended)
    await store.add_event("done-1", "first_audio", {"ms": 280})
    await store.close()

    store = Store(database_url)  # as after a restart
    await store.migrate()
    got = await store.get_session("done-1")
    assert got["endReason"] == "hangup" and got["start"] == "warm" and got["botStartMs"] == 6.5
    assert got["latency"]["turnsV2vMs"] == [850.0, 910.0] and got["latency"]["ttfwMs"] == pytest.approx(280, abs=1)
    assert got["latency"]["turns"][0]["stagesMs"] == {"vad_stop": 200.0, "audio_out": 850.0}
    assert got["latency"]["stagesMs"]["audio_out"]["p50"] == pytest.approx(880.0)
    assert got["transcript"][0]["text"] == "Hello!"
    assert (got["regionRequested"], got["region"], got["node"]) == ("eu", "us", "10.0.2.9")
    assert got["events"][0]["kind"] == "first_audio"
    assert await store.end_unfinished("control_restart", "restarted") == ["live-1"]
    assert (await store.get_session("live-1"))["endReason"] == "control_restart"
    assert {s["sessionId"] for s in await store.list_sessions(10)} == {"done-1", "live-1"}
    assert await store.get_session("nope") is None
    await store.close()


async def test_an_end_reason_is_stored_and_read_back_as_its_plain_string(database_url):
    store = Store(database_url)
    await store.migrate()
    r = SessionRecord(session_id="limit-1", agent="assistant", transport="webrtc")
    r.end(EndReason.MEMORY_LIMIT, "PSS over the profile")
    await store.save_session(r.to_public())
    await store.save_session(record("live-2"))
    assert await store.end_unfinished(EndReason.CONTROL_RESTART, "restarted") == ["live-2"]
    got = [(await store.get_session(s))["endReason"] for s in ("limit-1", "live-2")]
    assert got == ["memory_limit", "control_restart"] and all(type(reason) is str for reason in got)
    await store.close()


async def test_api_keys_are_hashed_scoped_and_revocable(database_url):
    store = Store(database_url)
    await store.migrate()
    key, row = await store.create_key("public", "website")
    assert key.startswith("vf_pub_") and row["scope"] == "public"
    secret = key.split("_", 3)[3]
    assert all(secret not in str(v) for v in (await store.list_keys())[0].values())
    assert (await store.verify_key(key))["id"] == row["id"]
    assert await store.verify_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await store.verify_key("vf_priv_" + key.split("_", 2)[2]) is None  # scope is part of the key
    assert await store.verify_key("garbage") is None
    assert await store.count_live_keys() == 1
    assert await store.revoke_key(row["id"]) and not await store.revoke_key(row["id"])
    assert await store.verify_key(key) is None and await store.count_live_keys() == 0
    with pytest.raises(ValueError, match="scope: must be 'public' or 'private'"):
        await store.create_key("admin")
    await store.close()


async def test_outbox_due_delivered_failed(database_url):
    store = Store(database_url)
    await store.migrate()
    first = await store.enqueue_webhook("session.ended", "http://127.0.0.1:9/hook", {"sessionId": "s1"})
    second = await store.enqueue_webhook("session.started", "http://127.0.0.1:9/hook", {"sessionId": "s2"})
    due = await store.due_webhooks(time.time() + 1)
    assert {d.id for d in due} == {first, second}
    await store.webhook_failed(first, time.time() + 60, "connection refused")
    await store.webhook_delivered(second)
    assert await store.due_webhooks(time.time() + 1) == []
    assert await store.next_webhook_at() > time.time() + 30
    await store.close()


def test_bad_database_urls_are_named():
    with pytest.raises(ConfigError, match="database_url: unsupported database 'mysql'"):
        normalise("mysql://x@y/z")
    with pytest.raises(ConfigError, match="database_url: not a database URL"):
        normalise("::::")
    assert normalise("postgresql://u@h/db").startswith("postgresql+asyncpg://")
    assert normalise("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"


async def test_a_sqlite_database_is_created_private(tmp_path):
    """The database holds transcripts and key hashes: its file is 0600, a directory created for
    it 0700; an existing directory keeps the mode its operator gave it."""
    path = tmp_path / "new-dir" / "voxfleet.db"
    store = Store(f"sqlite:///{path}")
    await store.migrate()
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loose = tmp_path / "loose.db"
    loose.touch(mode=0o644)
    loose.chmod(0o644)
    tmp_path.chmod(0o755)
    await Store(f"sqlite:///{loose}").close()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
