"""Durable state: sessions, session events, API keys and the webhook outbox (SQLAlchemy 2, async).

SQLite file by default (zero set-up), PostgreSQL by URL (``postgresql+asyncpg://...``); the
schema is managed by Alembic migrations that run at start.
"""
