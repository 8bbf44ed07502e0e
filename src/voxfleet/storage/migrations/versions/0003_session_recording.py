"""a session's recording: its metadata once finished (format, channels, rate, duration, size, state)

Revision ID: 0003_recording
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_recording"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("recording", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("recording")
