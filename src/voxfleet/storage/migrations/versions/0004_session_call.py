"""a phone call's carrier side: carrier, direction, carrier call id, numbers, status timeline

Revision ID: 0004
Revises: 0003_recording
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003_recording"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("call", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("call")
