"""Fixtures of the cluster/deployment tests.

Prefect's environment is set before anything imports Prefect (shared/notes/prefect.md). The
temporary Prefect API (test harness) starts only for tests that request ``prefect_harness``.
"""

from __future__ import annotations

import os
import tempfile

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="pesflow-cluster-prefect-")
for _key, _value in {
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
    "DASK_LOGGING__DISTRIBUTED": "warning",
}.items():
    os.environ.setdefault(_key, _value)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the session; a server in ``PREFECT_API_URL`` is used as is."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=90),
    ):
        yield


@pytest.fixture(autouse=True)
def _fresh_contexts():
    """Cached stores/contexts never leak between tests."""
    yield
    from workflows.steps import close_stores

    close_stores()
