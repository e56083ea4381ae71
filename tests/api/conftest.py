"""Fixtures of the API tests: every ``client`` test runs on SQLite and on PostgreSQL.

PostgreSQL needs ``PESFLOW_TEST_POSTGRES_URL`` naming a test database (``test``, ``test_*``,
``*_test``); the session uses one temporary schema whose tables are emptied before each test.
"""

from __future__ import annotations

import os
import warnings

import pytest

# fastapi.testclient works with httpx; the advice to install httpx2 is not ours to follow here
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from database import Store, make_engine, upgrade  # noqa: E402
from database.models import Base  # noqa: E402
from database.testing import (  # noqa: E402
    POSTGRES_ENV,
    require_test_database,
    temporary_postgres_schema,
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TOKEN = "pf_test-token-0123456789"


@pytest.fixture(scope="session")
def _postgres_schema():
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    with temporary_postgres_schema(require_test_database(url), prefix="pfapi") as scoped:
        upgrade(scoped)
        yield scoped


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A migrated, empty database: SQLite in tmp_path or the session's PostgreSQL schema."""
    if request.param == "sqlite":
        return None  # the default: <data_dir>/pesflow.sqlite
    url = request.getfixturevalue("_postgres_schema")
    if url is None:
        pytest.skip(
            f"{POSTGRES_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()
    return url


@pytest.fixture
def settings(tmp_path, db_url):
    """API settings on the test database (public reads, no CORS)."""
    from api.settings import get_api_settings

    (tmp_path / "data").mkdir(exist_ok=True)
    return get_api_settings(data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture
def store(settings):
    """The store the app uses."""
    s = Store.from_url(settings.resolved_database_url())
    yield s
    s.close()


@pytest.fixture
def client(settings, store):
    """A TestClient of the app."""
    from api.app import create_app

    with TestClient(create_app(settings, store=store)) as c:
        yield c
    from workflows.steps import close_stores

    close_stores()


@pytest.fixture
def auth(store) -> dict[str, str]:
    """Headers with a valid token."""
    store.add_api_token("tester", TOKEN)
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def prefect_api_url(prefect_harness):
    """The session's Prefect API as ``PREFECT_API_URL`` in the environment for the module's
    tests: an app served from another thread (TestClient, uvicorn) does not inherit the
    harness's settings context. Restored afterwards."""
    from prefect.settings import PREFECT_API_URL

    saved = os.environ.get("PREFECT_API_URL")
    url = os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
    yield url
    if saved is None:
        del os.environ["PREFECT_API_URL"]
    else:
        os.environ["PREFECT_API_URL"] = saved
