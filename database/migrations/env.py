"""Alembic environment for pesflow.

Used programmatically by :func:`database.upgrade` (the engine comes in
``config.attributes["engine"]``) and from the command line with ``database/alembic.ini``
(the URL comes from ``PESFLOW_DATABASE_URL`` or ``sqlalchemy.url``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text

from database.engine import make_engine
from database.models import Base

MIGRATION_LOCK_KEY = 0x7065_7366_6C6F_77  # "pesflow"
config = context.config
target_metadata = Base.metadata


def _engine():
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine, False
    url = os.environ.get("PESFLOW_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set PESFLOW_DATABASE_URL (or sqlalchemy.url) to migrate")
    return make_engine(url), True


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it."""
    url = os.environ.get("PESFLOW_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection (one transaction)."""
    engine, owned = _engine()
    try:
        # pesflow_write: on SQLite the transaction starts with BEGIN IMMEDIATE, and on
        # PostgreSQL an advisory lock is taken, so concurrent upgrades run one after the other
        # (the second finds the schema at head and does nothing).
        with engine.execution_options(pesflow_write=True).connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations recreate tables (copy, drop, rename). With foreign keys on,
                # dropping a referenced table runs its ON DELETE actions (CASCADE would empty
                # the children), so they are off for the migration (the pragma only works
                # outside a transaction) and checked before the commit.
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection, target_metadata=target_metadata, render_as_batch=True
            )
            try:
                with context.begin_transaction():
                    if connection.dialect.name == "postgresql":
                        connection.execute(
                            text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY}
                        )
                    context.run_migrations()
                    if sqlite:
                        bad = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if bad:
                            raise RuntimeError(f"migration broke foreign keys: {bad[:5]}")
                connection.commit()
            finally:
                if sqlite:
                    connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
