"""Typed results of a labelling call: a :class:`LabelResult` or a :class:`LabelFailure`.

Both are frozen dataclasses with an ``ok`` property, so callers branch on ``outcome.ok``
(or ``isinstance``) and never on exceptions. Units: eV, eV/Å, eV/Å^3 (stress in ASE's Voigt
order xx yy zz yz xz xy and sign convention).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AttemptRecord",
    "FailureKind",
    "LabelError",
    "LabelFailure",
    "LabelOutcome",
    "LabelResult",
]


class FailureKind(enum.StrEnum):
    """The five ways a labelling call can fail (values are the strings stored in the database)."""

    SCF_UNCONVERGED = "scf_unconverged"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    INVALID_INPUT = "invalid_input"
    MISSING_EXECUTABLE = "missing_executable"


class LabelError(Exception):
    """Raised *inside* a backend to signal a typed failure; the base class turns it into a value.

    Never escapes :meth:`dft_adapters.base.Labeler.label`.
    """

    def __init__(
        self, kind: FailureKind | str, message: str, code_version: str | None = None
    ) -> None:
        self.kind = FailureKind(kind)
        self.message = message
        self.code_version = code_version
        super().__init__(f"{self.kind.value}: {message}")


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of a labelling call (the retry policy may make several).

    ``settings_changes`` holds only the "what" settings that differ from the requested ones
    (empty for the first attempt); ``status`` is ``"ok"`` or a :class:`FailureKind` value.
    """

    index: int
    status: str
    settings_changes: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    wall_time: float = 0.0
    workdir: str | None = None

    @property
    def ok(self) -> bool:
        """True when this attempt produced a label."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (for the database)."""
        return {
            "index": self.index,
            "status": self.status,
            "settings_changes": dict(self.settings_changes),
            "message": self.message,
            "wall_time": self.wall_time,
            "workdir": self.workdir,
        }


@dataclass(frozen=True, eq=False)
class LabelResult:
    """A successful label.

    ``energy`` is the force-consistent energy (the Mermin free energy where smearing is used),
    i.e. the quantity whose negative gradient ``forces`` is. ``stress`` is ``None`` unless the
    cell is periodic in all three directions. ``settings_hash`` hashes the *requested* "what"
    settings (see :func:`dft_adapters.settings.settings_hash`; use it to avoid labelling the same
    structure twice); ``settings`` are the settings actually used by the successful attempt
    (after retry changes, plus resolved inputs such as pseudopotential file names) and
    ``effective_settings_hash`` hashes them. The two hashes differ when a retry changed a
    setting that changes the physics (e.g. more smearing): do not mix such labels blindly.
    """

    labeler: str
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    code_version: str
    settings_hash: str
    settings: dict[str, Any]
    wall_time: float
    host: str
    workdir: str | None
    attempts: tuple[AttemptRecord, ...] = ()
    effective_settings_hash: str = ""

    @property
    def ok(self) -> bool:
        """Always True for a result."""
        return True

    @property
    def status(self) -> str:
        """``"ok"``."""
        return "ok"

    @property
    def raw_output(self) -> str | None:
        """Directory holding the code's raw input/output files (``None`` for in-memory codes)."""
        return self.workdir

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (arrays as nested lists) of every field plus ``status``."""
        return {
            "status": self.status,
            "labeler": self.labeler,
            "energy": self.energy,
            "forces": self.forces.tolist(),
            "stress": None if self.stress is None else self.stress.tolist(),
            "code_version": self.code_version,
            "settings_hash": self.settings_hash,
            "effective_settings_hash": self.effective_settings_hash,
            "settings": self.settings,
            "wall_time": self.wall_time,
            "host": self.host,
            "workdir": self.workdir,
            "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass(frozen=True)
class LabelFailure:
    """A failed label: ``kind`` plus the code's own message (never an exception)."""

    labeler: str
    kind: FailureKind
    message: str
    settings_hash: str = ""
    code_version: str | None = None
    wall_time: float = 0.0
    host: str = ""
    workdir: str | None = None
    attempts: tuple[AttemptRecord, ...] = ()

    @property
    def ok(self) -> bool:
        """Always False for a failure."""
        return False

    @property
    def status(self) -> str:
        """The failure kind as a string (e.g. ``"scf_unconverged"``)."""
        return self.kind.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field plus ``status``."""
        return {
            "status": self.status,
            "labeler": self.labeler,
            "kind": self.kind.value,
            "message": self.message,
            "settings_hash": self.settings_hash,
            "code_version": self.code_version,
            "wall_time": self.wall_time,
            "host": self.host,
            "workdir": self.workdir,
            "attempts": [a.to_dict() for a in self.attempts],
        }


LabelOutcome = LabelResult | LabelFailure
"""What :meth:`dft_adapters.base.Labeler.label` returns."""


def as_path(p: str | Path | None) -> str | None:
    """Stringify an optional path."""
    return None if p is None else str(p)


def check_shapes(energy: float, forces: np.ndarray, stress: np.ndarray | None, natoms: int) -> None:
    """Raise ``LabelError(crashed)`` if parsed arrays have the wrong shape or are not finite."""
    if not np.isfinite(energy):
        raise LabelError(FailureKind.CRASHED, f"non-finite energy {energy!r} in output")
    if forces.shape != (natoms, 3) or not np.all(np.isfinite(forces)):
        raise LabelError(
            FailureKind.CRASHED,
            f"forces of shape {forces.shape} (expected {(natoms, 3)}) or non-finite",
        )
    if stress is not None and (stress.shape != (6,) or not np.all(np.isfinite(stress))):
        raise LabelError(FailureKind.CRASHED, f"stress of shape {stress.shape} or non-finite")
