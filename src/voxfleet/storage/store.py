"""The store: one async SQLAlchemy engine, the queries voxfleet needs, migrations at open."""

from __future__ import annotations

import hashlib
import os
import hmac
import secrets
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import event, select, update
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import ConfigError
from voxfleet.storage.schema import ApiKeyRow, OutboxRow, SessionEventRow, SessionRow

MIGRATIONS = Path(__file__).parent / "migrations"
KEY_PREFIX = {"public": "vf_pub", "private": "vf_priv"}


def database_url(url: str) -> str:
    """Accept plain sqlite:/// and postgresql:// URLs and pick the async drivers."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a config error naming the value
        raise ConfigError(f"database_url: not a database URL ({url!r}): {exc}") from None
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database.startswith("~"):
        parsed = parsed.set(database=str(Path(parsed.database).expanduser()))
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
              "postgres": "postgresql+asyncpg"}.get(parsed.drivername, parsed.drivername)
    if driver not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(f"database_url: unsupported database {parsed.drivername!r} (use sqlite or postgresql)")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: readers never wait for the writer; busy_timeout: a writer waits for a lock (another
    process, e.g. `voxfleet keys`) up to 5 s instead of failing at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def private_file(path: Path) -> None:
    """Make the database file private to its owner: a directory voxfleet creates for it is 0700
    (an existing one is left as the operator made it), the file is created 0600 and an existing
    file of ours is narrowed to 0600 (SQLite gives its journal files the same mode)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store:
    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        if self.url.startswith("sqlite"):
            path = make_url(self.url).database
            if path and path != ":memory:":
                private_file(Path(path).expanduser())
        if self.url.startswith("sqlite"):
            self.engine: AsyncEngine = create_async_engine(self.url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:  # a connection the server dropped (a restart) is found out and replaced before use
            self.engine = create_async_engine(self.url, pool_pre_ping=True)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        def upgrade(connection: Any) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self.engine.begin() as connection:
            await connection.run_sync(upgrade)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- sessions ---------------------------------------------------------------------------
    async def save_session(self, record: dict[str, Any]) -> None:
        """Insert or update a session from its public form (``SessionRecord.to_public()``)."""
        latency = record.get("latency") or {}
        values = dict(
            id=record["sessionId"], agent=record["agent"], transport=record["transport"], state=record["state"],
            created_at=record["createdAt"], ended_at=record.get("endedAt"), end_reason=record.get("endReason"),
            end_detail=record.get("endDetail") or "", exit_code=record.get("exitCode"),
            exit_signal=record.get("exitSignal"), pid=record.get("pid"),
            warm=None if record.get("start") is None else record["start"] == "warm",
            bot_start_ms=record.get("botStartMs"), ttfw_ms=latency.get("ttfwMs"),
            v2v_p50_ms=latency.get("v2vP50Ms"), latency=latency, timings_ms=record.get("timingsMs") or {},
            transcript=record.get("transcript") or [], region_requested=record.get("regionRequested"),
            region=record.get("region"), node=record.get("node"), call=record.get("call"),
            recording=record.get("recording"),
        )
        async with self.sessions.begin() as db:
            await db.merge(SessionRow(**values))

    async def add_event(self, session_id: str, kind: str, data: dict[str, Any] | None = None,
                        at: float | None = None) -> None:
        async with self.sessions.begin() as db:
            db.add(SessionEventRow(session_id=session_id, kind=kind, data=data or {}, at=at or time.time()))

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        async with self.sessions() as db:
            row = await db.get(SessionRow, session_id)
            if row is None:
                return None
            events = (await db.execute(select(SessionEventRow).where(SessionEventRow.session_id == session_id)
                                       .order_by(SessionEventRow.at))).scalars().all()
        public = _public(row)
        public["events"] = [{"at": e.at, "kind": e.kind, "data": e.data} for e in events]
        return public

    async def list_sessions(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        query = select(SessionRow).order_by(SessionRow.created_at.desc()).limit(limit)
        if state:
            query = query.where(SessionRow.state == state)
        async with self.sessions() as db:
            return [_public(row) for row in (await db.execute(query)).scalars().all()]

    async def unfinished_sessions(self) -> list[dict[str, Any]]:
        async with self.sessions() as db:
            rows = (await db.execute(select(SessionRow).where(SessionRow.state != "ended"))).scalars().all()
        return [_public(row) for row in rows]

    async def end_unfinished(self, reason: EndReason, detail: str, keep: Collection[str] = frozenset()) -> list[str]:
        """Mark sessions a previous run left unfinished (but those in `keep`) as ended; their ids."""
        now = time.time()
        async with self.sessions.begin() as db:
            rows = (await db.execute(select(SessionRow).where(SessionRow.state != "ended"))).scalars().all()
            rows = [row for row in rows if row.id not in keep]
            for row in rows:
                row.state, row.end_reason, row.end_detail, row.ended_at = "ended", reason, detail, now
        return [row.id for row in rows]

    async def set_recording(self, session_id: str, recording: dict[str, Any]) -> bool:
        """Record a session's recording metadata (finished, or expired); False if no such session."""
        async with self.sessions.begin() as db:
            result = cast(CursorResult[Any], await db.execute(
                update(SessionRow).where(SessionRow.id == session_id).values(recording=recording)))
        return result.rowcount == 1

    # -- API keys ---------------------------------------------------------------------------
    async def create_key(self, scope: str, name: str = "") -> tuple[str, dict[str, Any]]:
        """Create a key; returns (the key, shown once, never stored) and its listing row."""
        if scope not in KEY_PREFIX:
            raise ValueError(f"scope: must be 'public' or 'private' (got {scope!r})")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        row = ApiKeyRow(id=key_id, name=name, scope=scope, secret_hash=_hash(secret), created_at=time.time())
        async with self.sessions.begin() as db:
            db.add(row)
        return f"{KEY_PREFIX[scope]}_{key_id}_{secret}", _key_public(row)

    async def verify_key(self, key: str) -> dict[str, Any] | None:
        """The key's row if `key` is a live key of ours, else None (constant-time on the secret)."""
        try:
            _vf, _scope, key_id, secret = key.split("_", 3)
        except ValueError:
            return None
        async with self.sessions() as db:
            row = await db.get(ApiKeyRow, key_id)
        if row is None or row.revoked_at is not None or not key.startswith(KEY_PREFIX[row.scope] + "_"):
            return None
        return _key_public(row) if hmac.compare_digest(row.secret_hash, _hash(secret)) else None

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.sessions() as db:
            rows = (await db.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).scalars().all()
        return [_key_public(r) for r in rows]

    async def count_live_keys(self) -> int:
        return sum(1 for k in await self.list_keys() if k["revokedAt"] is None)

    async def revoke_key(self, key_id: str) -> bool:
        async with self.sessions.begin() as db:
            # an UPDATE's result is a CursorResult (the one with rowcount); execute() is typed for any statement
            result = cast(CursorResult[Any], await db.execute(
                update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=time.time())))
        return result.rowcount == 1

    # -- webhook outbox ---------------------------------------------------------------------
    async def enqueue_webhook(self, event_type: str, url: str, payload: dict[str, Any]) -> str:
        event_id = f"msg_{uuid.uuid4().hex}"
        now = time.time()
        async with self.sessions.begin() as db:
            db.add(OutboxRow(id=event_id, event_type=event_type, url=url, payload=payload, created_at=now,
                             next_attempt_at=now))
        return event_id

    async def due_webhooks(self, now: float, limit: int = 20) -> list[OutboxRow]:
        query = (select(OutboxRow).where(OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at <= now)
                 .order_by(OutboxRow.next_attempt_at).limit(limit))
        async with self.sessions() as db:
            return list((await db.execute(query)).scalars().all())

    async def next_webhook_at(self) -> float | None:
        query = select(OutboxRow.next_attempt_at).where(OutboxRow.delivered_at.is_(None)) \
            .order_by(OutboxRow.next_attempt_at).limit(1)
        async with self.sessions() as db:
            return (await db.execute(query)).scalar_one_or_none()

    async def webhook_delivered(self, event_id: str) -> None:
        async with self.sessions.begin() as db:
            await db.execute(update(OutboxRow).where(OutboxRow.id == event_id)
                             .values(delivered_at=time.time(), attempts=OutboxRow.attempts + 1))

    async def webhook_failed(self, event_id: str, next_attempt_at: float, error: str) -> None:
        async with self.sessions.begin() as db:
            await db.execute(update(OutboxRow).where(OutboxRow.id == event_id)
                             .values(next_attempt_at=next_attempt_at, attempts=OutboxRow.attempts + 1,
                                     last_error=error[:500]))


def _public(row: SessionRow) -> dict[str, Any]:
    return {
        "sessionId": row.id, "agent": row.agent, "transport": row.transport, "state": row.state,
        "createdAt": row.created_at, "endedAt": row.ended_at, "endReason": row.end_reason,
        "endDetail": row.end_detail or None, "exitCode": row.exit_code, "exitSignal": row.exit_signal,
        "pid": row.pid, "start": None if row.warm is None else ("warm" if row.warm else "cold"),
        "botStartMs": row.bot_start_ms, "queuePosition": None, "timingsMs": row.timings_ms,
        "latency": row.latency, "transcript": row.transcript,
        "regionRequested": row.region_requested, "region": row.region, "node": row.node,
        **({"call": row.call} if row.call else {}),
        "recording": row.recording,
    }


def _key_public(row: ApiKeyRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "scope": row.scope, "createdAt": row.created_at,
            "revokedAt": row.revoked_at}
