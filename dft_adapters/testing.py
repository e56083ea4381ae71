"""Test doubles for labelers, shipped so out-of-tree backends and pesflow's own tests use the
same ones. Nothing here is imported by the product.

* :class:`FakeRunner` — the one seam adapter tests fake: process execution. It writes the files
  a real run would leave (committed outputs of the real code) and returns an exit status, a
  timeout or a missing executable; parsers always run for real.
* :class:`ScriptedRunner` — successive fake runs (e.g. unconverged, unconverged, converged);
  running the code more often than scripted fails the test.
* :func:`fake_executable` — an executable file for the ``PATH`` pre-flight check.
* :func:`count_runs` — record every attempt a labeler computes (the code still runs).
* :func:`registered` — register a labeler class for the duration of a ``with`` block.
* :class:`~dft_adapters.mock.FaultInjection` (re-exported) — deterministic faults of the mock
  labelers (``get_labeler("emt", faults=FaultInjection({"crashed": 1.0}))``).
* :class:`ZeroLabeler` — an in-process labeler whose energy, forces and stress are zero; the
  smallest complete backend (a template for a new one).
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from ase import Atoms

from .base import Labeler, RawLabel
from .execution import ProcessResult
from .mock import FaultInjection
from .registry import _REGISTERED, register
from .settings import Settings

__all__ = [
    "FakeRunner",
    "FaultInjection",
    "RunLog",
    "ScriptedRunner",
    "ZeroLabeler",
    "ZeroSettings",
    "count_runs",
    "fake_executable",
    "registered",
]


def fake_executable(directory: Path, name: str) -> str:
    """An executable file ``directory/name`` that exits 1 (for the ``PATH`` pre-flight check
    only: a fake runner never runs it); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _content(src: Path | str) -> str:
    return src.read_text(encoding="latin-1") if isinstance(src, Path) else src


@dataclass
class FakeRunner:
    """Stands in for process execution (:class:`~dft_adapters.execution.ProcessRunner`):
    writes the files a real run would leave and returns a status.

    ``stdout`` (a path, read as latin-1, or text) becomes the process's stdout file; ``files``
    maps names in the working directory to paths or text; ``returncode`` / ``timed_out`` are
    returned; ``missing=True`` raises ``FileNotFoundError`` as for an absent executable.
    ``calls`` records every argv.
    """

    stdout: Path | str = ""
    files: Mapping[str, Path | str] = field(default_factory=dict)
    returncode: int = 0
    timed_out: bool = False
    missing: bool = False
    calls: list[Sequence[str]] = field(default_factory=list)

    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float | None,
        stdout: Path,
        stderr: Path,
    ) -> ProcessResult:
        """Write the scripted files into ``cwd``; see :class:`ProcessRunner`."""
        self.calls.append(list(argv))
        if self.missing:
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        stdout.write_text(_content(self.stdout))
        stderr.write_text("")
        for name, src in self.files.items():
            (cwd / name).write_text(_content(src), encoding="latin-1")
        return ProcessResult(self.returncode, self.timed_out, 0.01)


class ScriptedRunner:
    """Plays one :class:`FakeRunner` per process run, in order. A run beyond the script raises
    ``AssertionError`` ("the code was run again"); ``calls`` counts the runs."""

    def __init__(self, *runners: FakeRunner) -> None:
        self.runners = list(runners)
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, argv: Sequence[str], **kwargs: object) -> ProcessResult:
        """The next scripted run."""
        with self._lock:
            if self.calls >= len(self.runners):
                raise AssertionError(
                    f"the code was run again (run {self.calls + 1}, {len(self.runners)} scripted)"
                )
            self.calls += 1
            runner = self.runners[self.calls - 1]
        return runner(argv, **kwargs)  # type: ignore[arg-type]


class RunLog(list[int]):
    """Attempt indices a labeler computed, in order (a list; thread-safe appends)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def count_runs(labeler: Labeler) -> RunLog:
    """Record every attempt ``labeler`` computes: wraps this object's ``_compute`` (the code
    still runs; other objects of the class are untouched). Returns the live log of attempt
    indices: ``len(log)`` is the number of runs of the code."""
    log = RunLog()
    compute = labeler._compute

    def counting(atoms: Atoms, settings: Settings, directory: Path | None, attempt: int):
        with log.lock:
            log.append(attempt)
        return compute(atoms, settings, directory, attempt)

    labeler._compute = counting  # type: ignore[method-assign]
    return log


@contextmanager
def registered(cls: type[Labeler]) -> Iterator[type[Labeler]]:
    """Register ``cls`` (:func:`~dft_adapters.registry.register`) inside the block only; a
    class registered before under the same name is restored afterwards."""
    before = _REGISTERED.get(cls.name)
    register(cls)
    try:
        yield cls
    finally:
        if before is None:
            _REGISTERED.pop(cls.name, None)
        else:
            _REGISTERED[cls.name] = before


@dataclass(frozen=True)
class ZeroSettings(Settings):
    """Settings of :class:`ZeroLabeler` (``scale`` only enters the settings hash)."""

    scale: float = 1.0


class ZeroLabeler(Labeler):
    """Energy 0 eV, forces 0 eV/Å (N, 3), stress 0 eV/Å^3 (6,) for fully periodic cells;
    in-process (no files). Not registered: use :func:`registered` or ``register``."""

    name: ClassVar[str] = "zero"
    settings_cls: ClassVar[type[Settings]] = ZeroSettings
    uses_scratch: ClassVar[bool] = False

    def _compute(
        self, atoms: Atoms, settings: Settings, directory: Path | None, attempt: int
    ) -> RawLabel:
        stress = np.zeros(6) if atoms.pbc.all() else None
        return RawLabel(0.0, np.zeros((len(atoms), 3)), stress, "zero-1")
