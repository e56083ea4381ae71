"""Instrumentation for exactly-once tests: counts the DFT runs of the mock EMT labeler.

Importing this module wraps ``EMTLabeler._compute`` (one call = one run of the "DFT code"):
every run appends a line ``<pid> <attempt> <structure fingerprint>`` to the file named by
``PESFLOW_TEST_DFT_LOG`` (O_APPEND: lines from several processes never mix) and calls
``on_run(n)`` with the number of runs in this process so far (tests use it to inject a fault at
a given moment). Counting happens in the labeler, below anything pesflow stores, so it is
independent of the database the tests check. Subprocesses import it with
``python -c "import tests.workflows._counting as c; c.cli()" ARGS``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from dft_adapters.mock import EMTLabeler, structure_fingerprint

ENV = "PESFLOW_TEST_DFT_LOG"
_real = EMTLabeler._compute
_runs = 0
_lock = threading.Lock()
on_run: Callable[[int], None] | None = None


def _counted(self, atoms, settings, directory, attempt):
    global _runs
    with _lock:  # labels run in a thread pool: each run gets its own number, none skipped
        _runs += 1
        n = _runs
    path = os.environ.get(ENV)
    if path:
        line = f"{os.getpid()} {attempt} {structure_fingerprint(atoms)}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    if on_run is not None:
        on_run(n)
    return _real(self, atoms, settings, directory, attempt)


EMTLabeler._compute = _counted


def dft_runs(path: str | Path) -> Counter:
    """Runs per structure fingerprint recorded in the log ``path`` (empty if none)."""
    p = Path(path)
    if not p.exists():
        return Counter()
    return Counter(line.split()[2] for line in p.read_text().splitlines() if line.strip())


def cli() -> None:
    """``pesflow`` with the instrumentation in place (arguments from ``sys.argv``)."""
    from pesflow.cli import app

    sys.exit(app(prog_name="pesflow"))
