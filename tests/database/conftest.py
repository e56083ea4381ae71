"""Database test fixtures: every ``store`` test runs on SQLite and on PostgreSQL.

PostgreSQL tests need ``PESFLOW_TEST_POSTGRES_URL`` (``.ci/run`` exports it) and get a fresh
schema each; the URL must name a test database (``test``, ``test_*``, ``*_test``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from database import Store, sqlite_url
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


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """URL of an empty, isolated database (SQLite file in tmp_path, or a fresh PG schema)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data")
    else:
        with temporary_postgres_schema(postgres_url_or_skip()) as url:
            yield url


@pytest.fixture
def store(db_url):
    """A migrated :class:`Store` on each backend."""
    s = Store.from_url(db_url)
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
