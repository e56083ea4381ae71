"""The :class:`Labeler` interface: an ASE ``Atoms`` in, a :class:`LabelResult` or a typed
:class:`LabelFailure` out.

A labeler is built from three plain objects:

* ``settings`` — the "what" (a frozen :class:`~dft_adapters.settings.Settings` subclass);
* ``executor`` — the "how and where" (:class:`~dft_adapters.execution.Executor`);
* ``retry_policy`` — what to do after a failure (:class:`~dft_adapters.retry.RetryPolicy`).

:meth:`Labeler.label` never raises for a bad structure or a failing code and never mutates its
input: it copies the atoms, runs the pre-flight checks, then runs attempts (each in its own
scratch directory, kept and renamed ``attempt-<i>.failed-<kind>`` on failure) until one
succeeds or the retry policy gives up. Backends implement :meth:`Labeler._compute` (and
optionally :meth:`Labeler.check_inputs`) and signal typed failures by raising
:class:`~dft_adapters.results.LabelError`. With a ``workdir`` the call is exactly-once: the
outcome is written to ``workdir/outcome.json`` and re-read by every later call
(:mod:`dft_adapters.outcome`).
"""

from __future__ import annotations

import dataclasses
import socket
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms

from .execution import Executor
from .outcome import OUTCOME_NAME, input_fingerprint, load_matching, locked_workdir, write_outcome
from .preflight import PreflightLimits, check_geometry
from .results import (
    AttemptRecord,
    FailureKind,
    LabelError,
    LabelFailure,
    LabelOutcome,
    LabelResult,
    check_shapes,
)
from .retry import RetryPolicy
from .settings import Settings, settings_hash
from .workdirs import fresh_dir, keep_failed, plain, remove_tree, snapshot, str_or_none

__all__ = ["Labeler", "RawLabel"]


@dataclass(frozen=True, eq=False)
class RawLabel:
    """What a backend's :meth:`Labeler._compute` returns for one successful attempt."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    code_version: str
    resolved: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Inputs resolved for this structure (e.g. pseudopotential files, k-point grid)."""


class Labeler(ABC):
    """Base class of every backend. See the module docstring for the contract."""

    name: ClassVar[str]
    """Registry name (``"emt"``, ``"espresso"``, ...)."""
    settings_cls: ClassVar[type[Settings]]
    """The backend's "what" settings class."""
    default_command: ClassVar[str | None] = None
    """Executable run by file-based backends (``None`` for in-process ones)."""
    uses_scratch: ClassVar[bool] = True
    """False for in-memory backends that write no files."""
    honours: ClassVar[frozenset[str]] = frozenset()
    """Per-atom state the backend passes to its code (``initial_magmoms``: collinear moments,
    ``initial_charges``: their sum as the total charge, :func:`.state.total_charge`); a structure
    carrying any other is refused in pre-flight (``invalid_input``) rather than computed as
    another state."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        executor: Executor | None = None,
        retry_policy: RetryPolicy | None = None,
        preflight: PreflightLimits | None = None,
    ) -> None:
        settings = self.settings_cls() if settings is None else settings
        if not isinstance(settings, self.settings_cls):
            raise TypeError(
                f"{type(self).__name__} needs {self.settings_cls.__name__}, got {type(settings).__name__}"
            )
        self.settings: Settings = settings
        self.executor: Executor = executor or Executor()
        self.retry_policy: RetryPolicy = retry_policy or RetryPolicy()
        self.preflight_limits: PreflightLimits = preflight or PreflightLimits()

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Labeler:
        """Build from flat keyword arguments: settings fields go to ``settings_cls``, the rest
        (``executor``, ``retry_policy``, ``preflight``, backend extras) to the constructor."""
        names = {f.name for f in dataclasses.fields(cls.settings_cls)}
        settings_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        if "settings" in kwargs:
            if settings_kwargs:
                raise TypeError("pass either settings=... or settings fields, not both")
            return cls(**kwargs)
        return cls(cls.settings_cls(**settings_kwargs), **kwargs)

    # ------------------------------------------------------------------ public API
    @property
    def settings_hash(self) -> str:
        """Stable sha256 of the requested "what" settings (never of the executor)."""
        return settings_hash(self.name, self.settings)

    def describe(self) -> dict[str, Any]:
        """Provenance for the database: name, settings, hash, executor and retry policy."""
        ex = self.executor
        return {
            "labeler": self.name,
            "settings": self.settings.to_dict(),
            "settings_hash": self.settings_hash,
            "executor": {
                "command": ex.command_line(self.default_command) if self.default_command else None,
                "env": dict(ex.env),
                "timeout": ex.timeout,
            },
            "retry_policy": self.retry_policy.to_dict(),
        }

    def preflight(self, atoms: Atoms) -> LabelFailure | None:
        """Run all checks that need no code run; a failure value or ``None``."""
        t0 = time.perf_counter()
        problem = check_geometry(atoms, self.preflight_limits)
        kind = FailureKind.INVALID_INPUT
        if problem is None:
            try:
                problem = self.check_inputs(atoms, self.settings)
            except LabelError as err:  # backends may raise instead of returning
                kind, problem = err.kind, err.message
            except Exception as err:  # a check that blows up still answers with a value
                problem = f"pre-flight check failed: {type(err).__name__}: {err}"
        if problem is None:
            problem = self.unhonoured_state(atoms)
        if problem is None and self.default_command is not None:
            missing = self.executor.missing_executables(self.default_command)
            if missing:
                kind = FailureKind.MISSING_EXECUTABLE
                problem = f"executable not found on PATH: {', '.join(missing)}"
        if problem is None:
            return None
        return self._failure(kind, problem, time.perf_counter() - t0, None, ())

    @classmethod
    def unhonoured_state(cls, atoms: Atoms) -> str | None:
        """Why this backend cannot compute ``atoms`` as given (:func:`.state.unhonoured`);
        ``None`` when it can."""
        from .state import unhonoured

        return unhonoured(cls.name, cls.honours, atoms)

    def label(self, atoms: Atoms, workdir: str | Path | None = None) -> LabelOutcome:
        """Label ``atoms`` (never mutated): energy, forces and, for periodic cells, stress.

        ``workdir`` is the directory of this calculation (created if missing); attempt ``i``
        runs in ``workdir/attempt-<i>``. Without it a fresh directory is made under
        ``executor.scratch_root`` (in-memory backends make none) and nothing is persisted.
        Returns a :class:`LabelResult` or a :class:`LabelFailure`; exceptions from the code or
        the parser become ``crashed`` failures.

        Exactly once with a ``workdir`` (see :mod:`dft_adapters.outcome`): the whole call holds
        an exclusive lock on ``workdir/.lock`` (a concurrent call on the same directory, in
        this or another process, waits). If ``workdir/outcome.json`` holds the outcome of this
        labeler, settings hash and structure, it is returned (``reused=True``) without
        pre-flight or any attempt. Otherwise the final outcome, success or final failure, is
        written there atomically before it is returned (``persisted=True``; ``False`` with a
        logged warning when writing failed). Pre-flight failures and ``missing_executable``
        (a property of the machine, not of the calculation) are not stored. A corrupt
        ``outcome.json`` is moved aside (``outcome.json.corrupt-<n>``) and computed anew.

        Raises :class:`~dft_adapters.outcome.OutcomeMismatchError` (a ``ValueError``) when
        ``workdir`` holds the outcome of another labeler, settings or structure.
        """
        t0 = time.perf_counter()
        atoms = snapshot(atoms)
        if workdir is None:
            return self._run(atoms, None, t0)
        checked = False
        if not Path(workdir).exists():  # nothing stored yet: a bad input creates no directory
            failure = self.preflight(atoms)
            if failure is not None:
                return failure
            checked = True
        fingerprint = input_fingerprint(atoms)

        def crashed(message: str) -> LabelFailure:
            return self._failure(FailureKind.CRASHED, message, time.perf_counter() - t0, None, ())

        with ExitStack() as stack:
            try:
                directory = stack.enter_context(locked_workdir(workdir))
            except OSError as err:
                return crashed(f"cannot create or lock the scratch directory {workdir}: {err}")
            try:
                stored = load_matching(
                    directory,
                    labeler=self.name,
                    settings_hash=self.settings_hash,
                    atoms=atoms,
                    fingerprint=fingerprint,
                )
            except OSError as err:
                return crashed(f"cannot read {directory / OUTCOME_NAME}: {err}")
            if stored is not None:
                return stored
            outcome = self._run(atoms, directory, t0, checked)
            if not outcome.attempts or outcome.status == FailureKind.MISSING_EXECUTABLE:
                return outcome  # nothing ran (or the machine lacks the code): nothing to keep
            return write_outcome(directory, outcome, atoms, fingerprint)

    def _run(
        self, atoms: Atoms, workdir: Path | None, t0: float, checked: bool = False
    ) -> LabelOutcome:
        """Pre-flight (unless ``checked``), then attempts until one succeeds or the retry
        policy gives up."""
        failure = None if checked else self.preflight(atoms)
        if failure is not None:
            return failure
        try:
            calc_dir = self._calc_dir(workdir)
        except OSError as err:
            return self._failure(
                FailureKind.CRASHED, f"cannot create the scratch directory: {err}", 0.0, None, ()
            )
        settings = self.settings
        attempts: list[AttemptRecord] = []
        retries: Counter[FailureKind] = Counter()
        code_version: str | None = None
        while True:
            index = len(attempts)
            ta = time.perf_counter()
            raw: RawLabel | None = None
            attempt_dir: Path | None = None
            try:
                attempt_dir = fresh_dir(calc_dir / f"attempt-{index}") if calc_dir else None
                raw = self._compute(atoms.copy(), settings, attempt_dir, index)
                stress = raw.stress if atoms.pbc.all() else None
                if atoms.pbc.all() and stress is None:
                    raise LabelError(
                        FailureKind.UNPARSABLE_OUTPUT,
                        "no stress parsed for a periodic cell",
                        raw.code_version,
                    )
                check_shapes(float(raw.energy), np.asarray(raw.forces), stress, len(atoms))
            except LabelError as err:
                error = err
            except FileNotFoundError as err:
                error = LabelError(FailureKind.MISSING_EXECUTABLE, str(err))
            except Exception as err:  # a code or parser error is a value, never a traceback
                tb = traceback.format_exception_only(type(err), err)[-1].strip()
                error = LabelError(FailureKind.CRASHED, f"{self.name} raised {tb}")
            else:
                error = None
            wall = time.perf_counter() - ta
            changes = self.settings.diff(settings)
            if error is None and raw is not None:
                kept = attempt_dir
                if attempt_dir is not None and not self.executor.keep_success:
                    remove_tree(attempt_dir)
                    kept = None
                attempts.append(AttemptRecord(index, "ok", changes, "", wall, str_or_none(kept)))
                used = settings.to_dict()
                used.update(plain(raw.resolved))
                return LabelResult(
                    labeler=self.name,
                    energy=float(raw.energy),
                    forces=np.array(raw.forces, dtype=float).reshape(len(atoms), 3),
                    stress=None if stress is None else np.array(stress, dtype=float).reshape(6),
                    code_version=raw.code_version,
                    settings_hash=self.settings_hash,
                    settings=used,
                    wall_time=time.perf_counter() - t0,
                    host=socket.gethostname(),
                    workdir=str_or_none(kept),
                    attempts=tuple(attempts),
                    effective_settings_hash=settings_hash(self.name, settings),
                )
            assert error is not None
            code_version = error.code_version or code_version
            kept_dir = keep_failed(attempt_dir, error.kind) if attempt_dir else None
            attempts.append(
                AttemptRecord(
                    index, error.kind.value, changes, error.message, wall, str_or_none(kept_dir)
                )
            )
            if retries[error.kind] < self.retry_policy.max_retries(error.kind):
                retries[error.kind] += 1
                settings = self.retry_policy.next_settings(
                    settings, error.kind, retries[error.kind]
                )
                continue
            return self._failure(
                error.kind,
                error.message,
                time.perf_counter() - t0,
                kept_dir,
                tuple(attempts),
                code_version,
            )

    # ------------------------------------------------------------------ backend hooks
    def check_inputs(self, atoms: Atoms, settings: Settings) -> str | None:
        """Backend pre-flight (elements supported, files present); a message or ``None``."""
        return None

    @abstractmethod
    def _compute(
        self, atoms: Atoms, settings: Settings, directory: Path | None, attempt: int
    ) -> RawLabel:
        """Run one attempt in ``directory`` (``None`` when ``uses_scratch`` is False).

        Raise :class:`LabelError` for typed failures; any other exception counts as ``crashed``.
        """

    # ------------------------------------------------------------------ helpers
    def _failure(
        self,
        kind: FailureKind,
        message: str,
        wall: float,
        workdir: Path | None,
        attempts: tuple[AttemptRecord, ...],
        code_version: str | None = None,
    ) -> LabelFailure:
        return LabelFailure(
            labeler=self.name,
            kind=FailureKind(kind),
            message=message,
            settings_hash=self.settings_hash,
            code_version=code_version,
            wall_time=wall,
            host=socket.gethostname(),
            workdir=str_or_none(workdir),
            attempts=attempts,
        )

    def _calc_dir(self, workdir: str | Path | None) -> Path | None:
        if not self.uses_scratch:
            return None
        if workdir is not None:
            path = Path(workdir)
            path.mkdir(parents=True, exist_ok=True)
            return path.resolve()
        root = self.executor.scratch_root
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"pesflow-{self.name}-", dir=root)).resolve()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
