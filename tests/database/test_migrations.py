"""Alembic: upgrade on an empty database creates the schema the models describe; downgrade
removes it; upgrade works again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from database import Store, current_revision, downgrade, make_engine, upgrade
from database.models import Base

TABLES = {"campaigns", "iterations", "structures", "selections", "labels", "models", "api_tokens"}


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(empty_db_url):
    db_url = empty_db_url
    engine = make_engine(db_url)
    try:
        assert _tables(engine) == set()
        assert current_revision(engine) is None
        upgrade(engine)
        assert _tables(engine) == TABLES
        head = current_revision(engine)
        assert head is not None
        with engine.connect() as conn:  # the migrated schema is exactly the models' schema
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        downgrade(engine, "base")
        assert _tables(engine) == set()
        assert current_revision(engine) is None
        upgrade(engine)
        assert _tables(engine) == TABLES
        assert current_revision(engine) == head
    finally:
        engine.dispose()


def test_store_works_after_a_downgrade_upgrade_cycle(empty_db_url):
    db_url = empty_db_url
    upgrade(db_url)
    downgrade(db_url)
    with Store.from_url(db_url) as store:
        assert store.create_campaign("again").name == "again"
        assert [c.name for c in store.list_campaigns()] == ["again"]


def test_sqlite_pragmas(tmp_path):
    with Store.sqlite(tmp_path) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "pesflow.sqlite").exists()


def test_sqlite_write_transactions_take_the_write_lock_up_front(tmp_path):
    import sqlite3

    import pytest
    from sqlalchemy import text

    with Store.sqlite(tmp_path) as store, store.session(write=True) as sess:
        sess.execute(text("SELECT count(*) FROM labels"))  # a read: BEGIN IMMEDIATE already ran
        other = sqlite3.connect(tmp_path / "pesflow.sqlite", timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    with Store.sqlite(tmp_path) as store, store.session(write=False) as sess:
        sess.execute(text("SELECT count(*) FROM labels"))
        other = sqlite3.connect(tmp_path / "pesflow.sqlite", timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a read transaction does not block writers
        other.execute("ROLLBACK")
        other.close()


def test_concurrent_upgrades_of_an_empty_database(empty_db_url):
    db_url = empty_db_url
    # Three processes (e.g. workers starting at once) migrate the same empty database.
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys; from database import upgrade; upgrade(sys.argv[1])"
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url], cwd=root, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    engine = make_engine(db_url)
    try:
        assert _tables(engine) == TABLES
    finally:
        engine.dispose()


def test_in_memory_sqlite_store():
    with Store.from_url("sqlite://") as store:
        store.create_campaign("mem")
        assert [c.name for c in store.list_campaigns()] == ["mem"]
