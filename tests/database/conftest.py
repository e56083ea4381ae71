"""Database test fixtures: every ``store`` test runs on SQLite and on PostgreSQL.

PostgreSQL tests need ``PESFLOW_TEST_POSTGRES_URL`` (``.ci/run`` exports it). They share one
temporary schema per session whose tables are emptied before each test; migration tests get a
fresh, empty schema each. The URL must name a test database (``test``, ``test_*``, ``*_test``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from database import Store, make_engine, sqlite_url, upgrade
from database.models import Base
from database.testing import POSTGRES_ENV, require_test_database, temporary_postgres_schema

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_url_or_skip() -> str:
    """The PostgreSQL test URL (safety-checked), or skip with the reason."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(
            f"{POSTGRES_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    return require_test_database(url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    engine = make_engine(sqlite_url(directory))
    try:
        upgrade(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return directory / "pesflow.sqlite"


@pytest.fixture(scope="session")
def _postgres_schema():
    """One migrated schema for the session; tests get it truncated (see ``db_url``)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    with temporary_postgres_schema(require_test_database(url)) as scoped:
        upgrade(scoped)
        yield scoped


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """URL of a migrated, empty, isolated database: a copy of a migrated SQLite file in
    tmp_path, or the session's PostgreSQL schema with every table emptied."""
    if request.param == "sqlite":
        (tmp_path / "data").mkdir()
        shutil.copy(request.getfixturevalue("_sqlite_template"), tmp_path / "data")
        return sqlite_url(tmp_path / "data")
    postgres_url_or_skip()
    url = request.getfixturevalue("_postgres_schema")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # DELETE is much cheaper than TRUNCATE on tiny tables
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path):
    """URL of an empty, never migrated database (SQLite file, or a fresh PostgreSQL schema)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data")
    else:
        with temporary_postgres_schema(postgres_url_or_skip()) as url:
            yield url


@pytest.fixture
def store(db_url):
    """A :class:`Store` on each backend (schema at head, all tables empty)."""
    s = Store.from_url(db_url, migrate=False)
    try:
        yield s
    finally:
        s.close()


def make_atoms(seed: int = 0, n_cells: int = 2, symbols: str = "Cu") -> Atoms:
    """A rattled fcc supercell (4 * n_cells**3 atoms), distinct per seed."""
    atoms = bulk(symbols, "fcc", a=3.6, cubic=True) * (n_cells, n_cells, n_cells)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def make_result(atoms: Atoms, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """Random but reproducible (energy, forces, stress) with full float64 mantissas."""
    rng = np.random.default_rng(10_000 + seed)
    return (
        float(rng.normal(-3.5 * len(atoms), 1.0)),
        rng.normal(size=(len(atoms), 3)),
        rng.normal(scale=1e-3, size=6),
    )


@pytest.fixture
def campaign(store):
    """A campaign named 'cu' with one running iteration."""
    c = store.create_campaign("cu", {"temperatures": [300, 600], "labeler": "mock"})
    return c
