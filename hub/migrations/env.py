"""Alembic's environment: migrations run on the connection ``hub.schema`` opened and locked.

There is no alembic.ini: ``sovereign-hub db ...`` (``hub.schema``) is the only way in, so every
migration runs under the schema lock, inside one transaction.
"""
from alembic import context

from hub.store import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata,
                  render_as_batch=True)  # SQLite alters a table by copying it; PostgreSQL in place
with context.begin_transaction():
    context.run_migrations()
