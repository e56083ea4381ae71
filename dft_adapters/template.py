"""The one sequence of a file-based code: write inputs -> run -> classify the failure -> read.

In the style of ASE's ``GenericFileIO`` split (a *template* says what a code needs, a *profile*
says how and where it runs), a :class:`FileLabeler` subclass provides only its template hooks:

* :meth:`FileLabeler.write_files` — input files for one attempt, and a :class:`FileRun` naming
  the arguments, the stdout/stderr files and the file holding the code's main output;
* :meth:`FileLabeler.code_version` — the code version (and so the output layout) the run printed;
* :meth:`FileLabeler.classify` — the typed failure of a finished process, or ``None``;
* :meth:`FileLabeler.read_output` — energy / forces / stress of a successful run.

The profile is the operator's: the :class:`~dft_adapters.execution.Executor` (command, MPI
launcher, environment, timeout, scratch root) and the settings fields marked operator-only
(pseudopotential and data directories, :data:`~dft_adapters.settings.OPERATOR`). The shared
part — run through the executor's process seam, a timeout is ``timeout``, an output layout the
reader does not know (:class:`~dft_adapters.results.UnknownLayoutError`) is
``unparsable_output`` naming the version found — lives here once, in
:meth:`FileLabeler._compute`. Attempts, retries and exactly-once storage stay in
:class:`~dft_adapters.base.Labeler`.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms

from .base import Labeler, RawLabel
from .execution import ProcessResult
from .files import read_text, tail
from .results import FailureKind, LabelError, UnknownLayoutError
from .settings import Settings

__all__ = ["FileLabeler", "FileRun"]


@dataclass(frozen=True)
class FileRun:
    """What :meth:`FileLabeler.write_files` prepared for one attempt.

    ``args`` follow the profile's launcher + command (e.g. ``("-in", "espresso.pwi")``);
    ``stdout`` / ``stderr`` are the file names the process output goes to (in the attempt
    directory); ``output`` the file holding the code's main output (default: ``stdout``);
    ``resolved`` inputs resolved for this structure (stored with the label's settings);
    ``context`` anything the reader needs back (e.g. VASP's atom permutation).
    """

    args: tuple[str, ...] = ()
    stdout: str = "stdout"
    stderr: str = "stderr"
    output: str | None = None
    resolved: Mapping[str, Any] = field(default_factory=dict)
    context: Any = None

    @property
    def output_name(self) -> str:
        """The file the main output is read from."""
        return self.output or self.stdout


class FileLabeler(Labeler):
    """Base class of the file-based backends (``espresso``, ``vasp``, ``cp2k``).

    Subclasses set ``name``, ``settings_cls``, ``default_command`` and :attr:`code` and
    implement the four template hooks; see the module docstring.
    """

    code: ClassVar[str]
    """The code's name in messages (``"pw.x"``, ``"VASP"``, ``"CP2K"``)."""

    # ------------------------------------------------------------------ template hooks
    @abstractmethod
    def write_files(self, atoms: Atoms, settings: Settings, directory: Path) -> FileRun:
        """Write the input files of one attempt into ``directory`` (it exists and is empty).

        Raises :class:`~dft_adapters.results.LabelError` (``invalid_input``) for inputs that
        cannot be written."""

    def code_version(self, text: str, directory: Path) -> str | None:
        """The code version named by the main output ``text`` (or another file of
        ``directory``), e.g. ``"pw.x 7.2"``; ``None`` when none is found."""
        return None

    @abstractmethod
    def classify(
        self,
        directory: Path,
        proc: ProcessResult,
        text: str,
        version: str | None,
        run: FileRun,
    ) -> LabelError | None:
        """The typed failure of a process that ended (not by the timeout) — a non-zero exit
        (``crashed``, with the code's own message), an unconverged SCF
        (``scf_unconverged``), an incomplete output — or ``None`` when its output should be
        read. ``text`` is the main output, ``version`` what :meth:`code_version` found."""

    @abstractmethod
    def read_output(
        self,
        directory: Path,
        atoms: Atoms,
        settings: Settings,
        text: str,
        version: str | None,
        run: FileRun,
    ) -> RawLabel:
        """Energy (eV), forces (eV/Å, shape (N, 3) in the order of ``atoms``) and stress (eV/Å^3,
        ASE Voigt, ``None`` when not computed) of a run :meth:`classify` accepted.

        Raises :class:`~dft_adapters.results.UnknownLayoutError` for an output in a layout this
        reader does not know (becomes ``unparsable_output``) or ``LabelError`` for a failure
        found while reading."""

    # ------------------------------------------------------------------ the shared sequence
    def _compute(
        self, atoms: Atoms, settings: Settings, directory: Path | None, attempt: int
    ) -> RawLabel:
        """write_input -> executor.run -> timeout / :meth:`classify` -> :meth:`read_output`."""
        if directory is None:
            raise ValueError(f"{self.name} runs in an attempt directory")
        run = self.write_files(atoms, settings, directory)
        argv = [*self.executor.argv(self.default_command or self.name), *run.args]
        proc = self.executor.run(argv, directory, run.stdout, run.stderr)
        text = read_text(directory / run.output_name)
        if proc.timed_out:
            raise LabelError(
                FailureKind.TIMEOUT,
                f"{self.code} killed after the {self.executor.timeout} s limit:\n{tail(text, 5)}",
            )
        version = self.code_version(text, directory)
        failure = self.classify(directory, proc, text, version, run)
        if failure is not None:
            raise failure
        try:
            raw = self.read_output(directory, atoms, settings, text, version, run)
        except UnknownLayoutError as exc:
            raise LabelError(
                FailureKind.UNPARSABLE_OUTPUT,
                f"cannot read {run.output_name}: {exc}",
                version or exc.version,
            ) from exc
        if run.resolved:
            raw = dataclasses.replace(raw, resolved={**run.resolved, **raw.resolved})
        return raw
