"""The "how and where" of a calculation: command, MPI launcher, environment, scratch, timeout.

:class:`Executor` is a frozen dataclass independent of what is computed; it never enters the
settings hash. Process execution goes through one seam, :class:`ProcessRunner`, which tests
replace with a fake that writes a committed output file (parsers are never faked).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Executor", "ProcessResult", "ProcessRunner", "SubprocessRunner"]


@dataclass(frozen=True)
class ProcessResult:
    """What a finished (or killed) process left behind."""

    returncode: int
    timed_out: bool
    wall_time: float


@runtime_checkable
class ProcessRunner(Protocol):
    """Runs ``argv`` in ``cwd`` with stdout/stderr sent to files. The one seam tests fake.

    Must raise ``FileNotFoundError`` when the executable does not exist.
    """

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
        """Run the process to completion or until ``timeout`` seconds have passed."""
        ...


class SubprocessRunner:
    """Real process execution in its own session; on timeout the whole process group is killed
    (so ``mpirun``/``srun`` children die too)."""

    def __init__(self, kill_grace: float = 5.0) -> None:
        self.kill_grace = kill_grace

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
        """Run ``argv``; see :class:`ProcessRunner`."""
        t0 = time.perf_counter()
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill_group(proc)
                rc = proc.wait()
        return ProcessResult(returncode=rc, timed_out=timed_out, wall_time=time.perf_counter() - t0)

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=self.kill_grace)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass(frozen=True)
class Executor:
    """How and where a code runs.

    Parameters
    ----------
    command:
        The code's command line, e.g. ``"pw.x"`` or ``"/opt/qe/bin/pw.x -nk 2"``; ``None`` uses
        the backend's default.
    launcher:
        MPI launcher prefix, e.g. ``"mpirun -np 4"`` or ``"srun"``; ``None`` runs serially.
    env:
        Variables added to the current environment for the process (e.g. ``OMP_NUM_THREADS``).
    scratch_root:
        Parent of the per-calculation scratch directories when ``label`` gets no ``workdir``
        (default: the system temporary directory).
    timeout:
        Wall-clock limit in seconds per attempt; ``None`` for none.
    keep_success:
        Keep a successful attempt's directory (its raw output). Failed attempts are always kept,
        renamed ``attempt-<i>.failed-<kind>``.
    runner:
        The process-execution seam (tests pass a fake).
    """

    command: str | None = None
    launcher: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    scratch_root: str | None = None
    timeout: float | None = None
    keep_success: bool = True
    runner: ProcessRunner = field(default_factory=SubprocessRunner, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"Executor.timeout must be positive, got {self.timeout}")

    def command_line(self, default_command: str) -> str:
        """Launcher + command as one shell-quoted string (for ASE profiles)."""
        return shlex.join(self.argv(default_command))

    def argv(self, default_command: str) -> list[str]:
        """Launcher + command as an argument list (without the input-file arguments)."""
        launcher = shlex.split(self.launcher) if self.launcher else []
        return launcher + shlex.split(self.command or default_command)

    def environment(self) -> dict[str, str]:
        """The process environment: ``os.environ`` updated with ``env``."""
        merged = dict(os.environ)
        merged.update({str(k): str(v) for k, v in self.env.items()})
        return merged

    def missing_executables(self, default_command: str) -> list[str]:
        """Executables of the launcher and the command that cannot be found on ``PATH``."""
        path = self.environment().get("PATH")
        launcher = shlex.split(self.launcher) if self.launcher else []
        command = shlex.split(self.command or default_command)
        wanted = [launcher[0]] if launcher else []
        if command:
            wanted.append(command[0])
        return [exe for exe in wanted if shutil.which(exe, path=path) is None]

    def run(self, argv: Sequence[str], cwd: Path, stdout: str, stderr: str) -> ProcessResult:
        """Run ``argv`` in ``cwd`` through the runner with this executor's env and timeout."""
        return self.runner(
            argv,
            cwd=cwd,
            env=self.environment(),
            timeout=self.timeout,
            stdout=cwd / stdout,
            stderr=cwd / stderr,
        )
