"""Helpers for tests and benchmarks that need a throw-away database.

:func:`require_test_database` is the safety check: destructive helpers refuse any PostgreSQL
database whose name is not ``test``, ``test_*`` or ``*_test``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .engine import normalize_url
from .errors import UnsafeTestDatabaseError

POSTGRES_ENV = "PESFLOW_TEST_POSTGRES_URL"


def is_test_database_name(name: str | None) -> bool:
    """``test``, ``test_*`` or ``*_test``."""
    return bool(name) and (name == "test" or name.startswith("test_") or name.endswith("_test"))


def require_test_database(url: str) -> str:
    """Return the normalised URL, or raise :class:`UnsafeTestDatabaseError` unless it names a
    test database (SQLite files are accepted: tests put them in temporary directories)."""
    u = make_url(normalize_url(url))
    if u.get_backend_name() == "sqlite":
        return u.render_as_string(hide_password=False)
    if not is_test_database_name(u.database):
        raise UnsafeTestDatabaseError(
            f"refusing to run tests against database {u.database!r}: its name must be 'test', "
            "'test_*' or '*_test'"
        )
    return u.render_as_string(hide_password=False)


@contextmanager
def temporary_postgres_schema(url: str, prefix: str = "pf") -> Iterator[str]:
    """Create a fresh schema in the (test) database at ``url`` and yield a URL whose
    connections use it (``search_path``); the schema is dropped afterwards."""
    url = require_test_database(url)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield scoped.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()
