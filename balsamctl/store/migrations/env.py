"""Alembic's environment: migrations run in the transaction of the connection that ``upgrade`` hands over."""

from alembic import context

from balsamctl.store.tables import metadata


def run_migrations() -> None:
    """Run the pending migrations on ``config.attributes["connection"]``."""
    context.configure(connection=context.config.attributes["connection"], target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
