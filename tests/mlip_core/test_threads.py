"""pesflow sets torch's intra-op threads itself: process-global, independent of OMP_NUM_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlip_core.threads import configure_threads, current_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_configure_threads_sets_and_returns_the_previous_count(restore_threads):
    before = torch.get_num_threads()
    assert configure_threads(1) == before
    assert torch.get_num_threads() == 1 == current_threads()
    assert configure_threads(2) == 1
    assert torch.get_num_threads() == 2
    assert configure_threads(np.int64(1)) == 2  # numpy integers are integers
    assert configure_threads(before) == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (0, ValueError),
        (-2, ValueError),
        (1.0, TypeError),
        ("2", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_thread_counts_are_refused_and_change_nothing(restore_threads, bad, error):
    before = torch.get_num_threads()
    with pytest.raises(error, match="thread count"):
        configure_threads(bad)
    assert torch.get_num_threads() == before


def test_the_setting_wins_over_the_environment():
    """A worker started with OMP_NUM_THREADS=2 still runs with the count pesflow sets."""
    code = (
        "import torch; from mlip_core.threads import configure_threads; "
        "env = torch.get_num_threads(); configure_threads(1); "
        "print(env, torch.get_num_threads())"
    )
    # MKL_NUM_THREADS (which .ci/run and the Makefile export) would cap torch's start value too
    env = {k: v for k, v in os.environ.items() if k != "MKL_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["2", "1"]
