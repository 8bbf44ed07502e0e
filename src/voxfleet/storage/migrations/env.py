"""Alembic environment: migrations run on a connection voxfleet hands over (see store.migrate)."""

from alembic import context

from voxfleet.storage.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
