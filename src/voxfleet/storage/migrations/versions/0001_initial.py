"""sessions, session events, API keys, webhook outbox

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agent", sa.String(64), nullable=False, index=True),
        sa.Column("transport", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("ended_at", sa.Float),
        sa.Column("end_reason", sa.String(32)),
        sa.Column("end_detail", sa.Text, nullable=False, server_default=""),
        sa.Column("exit_code", sa.Integer),
        sa.Column("exit_signal", sa.Integer),
        sa.Column("pid", sa.Integer),
        sa.Column("warm", sa.Boolean),
        sa.Column("bot_start_ms", sa.Float),
        sa.Column("ttfw_ms", sa.Float),
        sa.Column("v2v_p50_ms", sa.Float),
        sa.Column("latency", sa.JSON, nullable=False),
        sa.Column("timings_ms", sa.JSON, nullable=False),
        sa.Column("transcript", sa.JSON, nullable=False),
    )
    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_session_events_session", "session_events", ["session_id", "at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False, index=True),
        sa.Column("delivered_at", sa.Float, index=True),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    for table in ("webhook_outbox", "api_keys", "session_events", "sessions"):
        op.drop_table(table)
