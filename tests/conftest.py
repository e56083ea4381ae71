"""Session-wide test setup shared by every package's tests.

Prefect's environment is set here, before anything imports Prefect (see
shared/notes/prefect.md): a throwaway PREFECT_HOME (one per pytest-xdist worker: the workers
inherit the controller's environment, and two temporary servers on one Prefect database wait on
each other's SQLite locks), no analytics, quiet console, a generous
ephemeral-server start-up timeout, and no task-run recorder (it locks SQLite). The temporary
Prefect API (test harness) starts only for tests that request ``prefect_harness``, once.
"""

from __future__ import annotations

import os
import tempfile

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(
        prefix=f"pesflow-test-prefect-{os.environ['PYTEST_XDIST_WORKER']}-"
    )
for _key, _value in {
    "PREFECT_HOME": tempfile.mkdtemp(prefix="pesflow-test-prefect-"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
    "DASK_LOGGING__DISTRIBUTED": "warning",
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_key, _value)


# Under pytest-xdist the scheduler picks the file order, so a file that enters (and later
# leaves) its own Prefect settings context may come before the first use of the harness; the
# harness then sits inside that context and is reset with it (later tests find no API). Each
# worker therefore enters the harness first. A serial run keeps it lazy (api/ tests come first).
@pytest.fixture(scope="session", autouse=bool(os.environ.get("PYTEST_XDIST_WORKER")))
def prefect_harness():
    """One temporary Prefect API for the whole session (heartbeats off); a server given by
    ``PREFECT_API_URL`` (e.g. started by CI) is used as is."""
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
