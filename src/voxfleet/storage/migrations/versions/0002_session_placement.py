"""where a session ran: the region it asked for, the region and node it ran in

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("region_requested", sa.String(64)))
        batch.add_column(sa.Column("region", sa.String(64)))
        batch.add_column(sa.Column("node", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        for column in ("node", "region", "region_requested"):
            batch.drop_column(column)
