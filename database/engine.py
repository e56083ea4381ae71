"""Engine creation (SQLite pragmas, PostgreSQL via psycopg 3) and Alembic upgrades."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_FILENAME = "pesflow.sqlite"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Alembic's environment (``alembic.context``) is a process-global proxy: run one command at a
# time per process. Across processes the migration transaction itself serialises (env.py).
_ALEMBIC_LOCK = threading.Lock()


def sqlite_url(data_dir: str | Path) -> str:
    """URL of the embedded default database: ``<data_dir>/pesflow.sqlite``."""
    return f"sqlite:///{Path(data_dir).resolve() / SQLITE_FILENAME}"


def normalize_url(url: str) -> str:
    """Map plain ``postgresql://`` / ``postgres://`` URLs to the psycopg 3 driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url``.

    SQLite: WAL journal, ``foreign_keys=ON``, a busy timeout, and transactions started by
    SQLAlchemy with ``BEGIN IMMEDIATE`` when the connection carries the execution option
    ``pesflow_write=True`` (so a writer takes the write lock up front and never fails half-way
    on a stale WAL snapshot), plain ``BEGIN`` otherwise. PostgreSQL: psycopg 3.
    """
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            # In-memory: one shared connection, or every checkout would see a new empty database.
            poolclass=StaticPool if u.database in (None, "", ":memory:") else None,
        )
        _install_sqlite_hooks(engine)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _enable_wal(cur) -> None:
    """Switch the database file to WAL (persistent, so a no-op once done).

    Switching needs an exclusive lock, and SQLite answers SQLITE_BUSY at once (without calling
    the busy handler) when another connection is switching or reading at that moment, as when
    several workers open a new database together: retry within the busy timeout.
    """
    import sqlite3
    import time

    if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):  # pragma: no cover - trivial
        # Let SQLAlchemy (not the sqlite3 module) emit BEGIN, see the "begin" hook.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        _enable_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("pesflow_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (default: head) on a URL or engine."""
    from alembic import command

    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        with _ALEMBIC_LOCK:
            command.upgrade(_alembic_config(engine), revision)
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()


def downgrade(url_or_engine: str | Engine, revision: str = "base") -> None:
    """Run the Alembic migrations down to ``revision`` (default: base, i.e. drop everything)."""
    from alembic import command

    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        with _ALEMBIC_LOCK:
            command.downgrade(_alembic_config(engine), revision)
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()


@functools.cache
def head_revision() -> str | None:
    """The newest revision of pesflow's migrations."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def current_revision(url_or_engine: str | Engine) -> str | None:
    """The Alembic revision the database is at (``None`` when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()
