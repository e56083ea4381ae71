"""The test helpers refuse to touch a database that is not a test database."""

from __future__ import annotations

import pytest

from database import UnsafeTestDatabaseError
from database.testing import is_test_database_name, require_test_database, temporary_postgres_schema


@pytest.mark.parametrize("name", ["test", "test_pesflow", "pesflow_test"])
def test_accepts_test_names(name):
    assert is_test_database_name(name)
    assert require_test_database(f"postgresql://u@h/{name}").startswith("postgresql+psycopg://")


@pytest.mark.parametrize("name", ["pesflow", "production", "testing", "latest", "postgres", ""])
def test_refuses_other_names(name):
    with pytest.raises(UnsafeTestDatabaseError, match="refusing"):
        require_test_database(f"postgresql+psycopg://u@127.0.0.1:5432/{name}")
    with (
        pytest.raises(UnsafeTestDatabaseError),
        temporary_postgres_schema(f"postgresql+psycopg://u@127.0.0.1:5432/{name}"),
    ):
        pass  # pragma: no cover - never reached
