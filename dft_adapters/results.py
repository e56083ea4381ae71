"""Typed results of a labelling call: a :class:`LabelResult` or a :class:`LabelFailure`.

Both are frozen dataclasses with an ``ok`` property, so callers branch on ``outcome.ok``
(or ``isinstance``) and never on exceptions. Units: eV, eV/Å, eV/Å^3 (stress in ASE's Voigt
order xx yy zz yz xz xy and sign convention).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from structure_checks.vocabulary import LABELER_FAILURE_KINDS

__all__ = [
    "AttemptRecord",
    "FailureKind",
    "LabelError",
    "LabelFailure",
    "LabelOutcome",
    "LabelResult",
    "UnknownLayoutError",
    "outcome_from_dict",
]


FailureKind = enum.StrEnum(  # type: ignore[misc]
    "FailureKind", {kind.upper(): kind for kind in LABELER_FAILURE_KINDS}, module=__name__
)
FailureKind.__doc__ = """The ways a labelling call can fail: ``SCF_UNCONVERGED``, ``CRASHED``,
``TIMEOUT``, ``INVALID_INPUT``, ``MISSING_EXECUTABLE``, ``UNPARSABLE_OUTPUT`` (values: the strings
stored in the database, defined once in :data:`structure_checks.vocabulary.LABELER_FAILURE_KINDS`).

``unparsable_output``: the code finished but its output has a layout the parser does not know
(another release of the code, or a print setting that changes the layout); the message names the
code version found in the output. Never retried: rerunning the code prints the same layout
again; the outputs are kept for a newer parser.
"""


class UnknownLayoutError(ValueError):
    """A finished code's output in a layout its parser does not know. ``version`` is the code
    version the output names (``None`` when it names none)."""

    def __init__(self, message: str, version: str | None) -> None:
        self.version = version
        super().__init__(f"{message} (output of {version or 'an unnamed code version'})")


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttemptRecord:
        """Inverse of :meth:`to_dict` (paths are taken as they are; unknown keys are ignored).

        Raises ``ValueError`` when a key is missing or has the wrong type.
        """
        return _parse("AttemptRecord", data, lambda d: cls._from(d))

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> AttemptRecord:
        changes = d.get("settings_changes") or {}
        if not isinstance(changes, Mapping):
            raise TypeError(f"settings_changes must be a mapping, got {type(changes).__name__}")
        return cls(
            index=_int(d["index"]),
            status=_text(d["status"]),
            settings_changes=dict(changes),
            message=_text(d.get("message", "")),
            wall_time=_float(d.get("wall_time", 0.0)),
            workdir=_opt_text(d.get("workdir")),
        )


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

    ``reused`` is True when :meth:`~dft_adapters.base.Labeler.label` re-read a finished outcome
    from ``<workdir>/outcome.json`` instead of running the code; ``persisted`` is True when the
    outcome is stored there (see :mod:`dft_adapters.outcome`). ``wall_time`` (s) and ``host``
    always describe the run that computed it.
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
    reused: bool = False
    persisted: bool = False

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
            "reused": self.reused,
            "persisted": self.persisted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelResult:
        """Inverse of :meth:`to_dict`: arrays become float64 ``numpy`` arrays (forces ``(n, 3)``,
        stress ``(6,)`` or ``None``); JSON floats round-trip float64 exactly. Paths are taken as
        they are; unknown keys are ignored.

        Raises ``ValueError`` when ``status`` is not ``"ok"``, a key is missing, a value has the
        wrong type or shape, or a number is not finite.
        """
        return _parse("LabelResult", data, lambda d: cls._from(d))

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> LabelResult:
        if d.get("status") != "ok":
            raise ValueError(f"status {d.get('status')!r} is not 'ok'")
        forces = np.array(d["forces"], dtype=np.float64)
        if forces.size == 0:
            forces = forces.reshape(0, 3)
        if forces.ndim != 2 or forces.shape[1] != 3:
            raise ValueError(f"forces of shape {forces.shape}, expected (n, 3)")
        stress = None if d["stress"] is None else np.array(d["stress"], dtype=np.float64)
        check_shapes(_float(d["energy"]), forces, stress, len(forces))
        settings = d["settings"]
        if not isinstance(settings, Mapping):
            raise TypeError(f"settings must be a mapping, got {type(settings).__name__}")
        return cls(
            labeler=_text(d["labeler"]),
            energy=_float(d["energy"]),
            forces=forces,
            stress=stress,
            code_version=_text(d["code_version"]),
            settings_hash=_text(d["settings_hash"]),
            settings=dict(settings),
            wall_time=_float(d["wall_time"]),
            host=_text(d["host"]),
            workdir=_opt_text(d.get("workdir")),
            attempts=_attempts(d.get("attempts", ())),
            effective_settings_hash=_text(d.get("effective_settings_hash", "")),
            reused=bool(d.get("reused", False)),
            persisted=bool(d.get("persisted", False)),
        )


@dataclass(frozen=True)
class LabelFailure:
    """A failed label: ``kind`` plus the code's own message (never an exception).

    ``reused`` and ``persisted`` mean what they mean on :class:`LabelResult`.
    """

    labeler: str
    kind: FailureKind
    message: str
    settings_hash: str = ""
    code_version: str | None = None
    wall_time: float = 0.0
    host: str = ""
    workdir: str | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    reused: bool = False
    persisted: bool = False

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
            "reused": self.reused,
            "persisted": self.persisted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelFailure:
        """Inverse of :meth:`to_dict` (paths are taken as they are; unknown keys are ignored).

        Raises ``ValueError`` when ``kind`` is not a :class:`FailureKind` value, a key is missing
        or a value has the wrong type.
        """
        return _parse("LabelFailure", data, lambda d: cls._from(d))

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> LabelFailure:
        kind = FailureKind(d["kind"])
        if d.get("status", kind.value) != kind.value:
            raise ValueError(f"status {d.get('status')!r} disagrees with kind {kind.value!r}")
        code_version = d.get("code_version")
        return cls(
            labeler=_text(d["labeler"]),
            kind=kind,
            message=_text(d["message"]),
            settings_hash=_text(d.get("settings_hash", "")),
            code_version=None if code_version is None else _text(code_version),
            wall_time=_float(d.get("wall_time", 0.0)),
            host=_text(d.get("host", "")),
            workdir=_opt_text(d.get("workdir")),
            attempts=_attempts(d.get("attempts", ())),
            reused=bool(d.get("reused", False)),
            persisted=bool(d.get("persisted", False)),
        )


LabelOutcome = LabelResult | LabelFailure
"""What :meth:`dft_adapters.base.Labeler.label` returns."""


def outcome_from_dict(data: Mapping[str, Any]) -> LabelOutcome:
    """A :class:`LabelResult` (``status == "ok"``) or :class:`LabelFailure` from its ``to_dict``.

    Raises ``ValueError`` for a malformed dict (see the two ``from_dict`` methods).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a label outcome must be a mapping, got {type(data).__name__}")
    if data.get("status") == "ok":
        return LabelResult.from_dict(data)
    return LabelFailure.from_dict(data)


_T = TypeVar("_T")


def _parse(what: str, data: Mapping[str, Any], build: Callable[[Mapping[str, Any]], _T]) -> _T:
    """Run ``build(data)``, turning every parsing error into one ``ValueError``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}.from_dict needs a mapping, got {type(data).__name__}")
    try:
        return build(data)
    except KeyError as err:
        raise ValueError(f"{what}.from_dict: missing key {err}") from err
    except (TypeError, ValueError, LabelError, OverflowError) as err:
        raise ValueError(f"{what}.from_dict: {err}") from err


def _attempts(items: Any) -> tuple[AttemptRecord, ...]:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"attempts must be a list, got {type(items).__name__}")
    return tuple(AttemptRecord.from_dict(a) for a in items)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"non-finite number {value!r}")
    return out


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
