"""Fixtures of the workflow tests.

Prefect's environment and the ``prefect_harness`` fixture are in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cu_emt.yaml"


@pytest.fixture(autouse=True)
def _fresh_contexts():
    """Cached stores/contexts never leak between tests (each uses its own database)."""
    yield
    from workflows.steps import close_stores

    close_stores()
