"""Fixtures of the cluster/deployment tests.

Prefect's environment and the ``prefect_harness`` fixture are in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks._slurm import SlurmCluster, missing, single_node_slurm

from .._codes import in_ci


@pytest.fixture(autouse=True)
def _fresh_contexts():
    """Cached stores/contexts never leak between tests."""
    yield
    from workflows.steps import close_stores

    close_stores()


def require_slurm() -> None:
    """Skip when SLURM (or MUNGE) is missing on a user's machine; FAIL in CI, which must run
    the SLURM tests (``.ci/run`` installs ``slurm-wlm munge``)."""
    reason = missing()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} — CI must run the SLURM tests (.ci/run installs them)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node SLURM cluster on this machine (``benchmarks._slurm``), ``SLURM_CONF``
    exported while it runs. At the end every job is cancelled and every daemon it started is
    stopped; anything left (a daemon, a job, a job's process) fails the session's last SLURM
    test at teardown (:class:`benchmarks._slurm.SlurmLeftoverError`)."""
    require_slurm()
    with single_node_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
