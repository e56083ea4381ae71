"""Fixtures of the cluster/deployment tests.

Prefect's environment and the ``prefect_harness`` fixture are in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_contexts():
    """Cached stores/contexts never leak between tests."""
    yield
    from workflows.steps import close_stores

    close_stores()
