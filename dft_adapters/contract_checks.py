"""The checks of :func:`dft_adapters.contract.check_labeler` (one method per check, sharing the
one computed label) and the finite-difference helpers they use."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from .base import Labeler
from .execution import Executor
from .results import FailureKind, LabelFailure, LabelOutcome, LabelResult, outcome_from_dict
from .settings import settings_hash
from .state import _NAMES as STATE_KEYS  # the per-atom state vocabulary
from .testing import RunLog, count_runs

if TYPE_CHECKING:
    from .contract import ContractSpec

__all__ = ["Checks", "NotApplicable", "energy_of", "fd_forces", "fd_stress"]


class NotApplicable(Exception):
    """Raised by a check that does not apply to this labeler or structure (reported as
    skipped, with the message as the reason)."""


def fd_forces(
    energy: Callable[[Atoms], float], atoms: Atoms, components: Sequence[tuple[int, int]], h: float
) -> np.ndarray:
    """-∂E/∂x (eV/Å) by central differences of step ``h`` (Å) for (atom, axis) components;
    shape (len(components),)."""
    out = []
    for i, k in components:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        out.append(-(energy(plus) - energy(minus)) / (2 * h))
    return np.array(out)


def fd_stress(energy: Callable[[Atoms], float], atoms: Atoms, voigt: int, h: float) -> float:
    """(1/V) ∂E/∂ε (eV/Å^3) of Voigt component ``voigt`` (0..5: xx yy zz yz xz xy) by central
    differences of a symmetric strain of step ``h`` (atoms scaled with the cell)."""
    a, b = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)][voigt]
    values = []
    for sign in (1, -1):
        eps = np.zeros((3, 3))
        eps[a, b] += sign * h
        if a != b:
            eps[b, a] += sign * h
            eps /= 2  # d/d(eps_ab) of the Voigt component of a symmetric strain
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        values.append(energy(strained))
    return (values[0] - values[1]) / (2 * h) / atoms.get_volume()


def energy_of(labeler: Labeler) -> Callable[[Atoms], float]:
    """E(atoms) in eV by ``labeler`` (no workdir); raises ``AssertionError`` on a failure."""

    def energy(atoms: Atoms) -> float:
        result = labeler.label(atoms)
        if not isinstance(result, LabelResult):
            raise AssertionError(f"label failed: {result.kind.value}: {result.message}")
        return result.energy

    return energy


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _result(outcome: LabelOutcome, what: str) -> LabelResult:
    if not isinstance(outcome, LabelResult):
        raise AssertionError(f"{what}: {outcome.kind.value}: {outcome.message}")
    return outcome


def _same_return(first: LabelOutcome, again: LabelOutcome) -> None:
    """``again`` is ``first`` re-read from the workdir: equal fields, bit-equal arrays."""
    _require(again.reused and not first.reused, f"reused: {first.reused} then {again.reused}")
    a, b = first.to_dict(), again.to_dict()
    a.pop("reused"), b.pop("reused")
    _require(a == b, "the re-read outcome differs from the first")
    if isinstance(first, LabelResult):
        assert isinstance(again, LabelResult)
        _require(type(again.energy) is float and again.energy == first.energy, "energy differs")
        _require(again.forces.tobytes() == first.forces.tobytes(), "forces differ bitwise")
        if first.stress is not None:
            _require(
                again.stress is not None and again.stress.tobytes() == first.stress.tobytes(),
                "stress differs bitwise",
            )


class Checks:
    """The checks of one :func:`~dft_adapters.contract.check_labeler` call: ``check_<name>``
    methods raising ``AssertionError`` (failed) or :class:`NotApplicable` (skipped)."""

    def __init__(
        self,
        labeler: Labeler | Callable[[Path], Labeler],
        atoms_factory: Callable[[], Atoms],
        spec: ContractSpec,
        root: Path,
    ) -> None:
        if isinstance(labeler, Labeler):
            given = labeler
            self.make: Callable[[Path], Labeler] = lambda _: copy.copy(given)
        else:
            self.make = labeler
        self.root = root
        self.labeler = self.make(root)
        self.runs: RunLog = count_runs(self.labeler)
        self.atoms_factory = atoms_factory
        self.spec = spec
        self.base: LabelResult | None = None
        self.failure: LabelFailure | None = None
        self.failure_runs: RunLog | None = None
        self.failing: Labeler | None = None
        self.decorated: Atoms | None = None  # what 'label' labelled, and a copy from before
        self.original: Atoms | None = None

    def atoms(self) -> Atoms:
        return self.atoms_factory()

    def need_base(self) -> LabelResult:
        if self.base is None:
            raise AssertionError("needs the 'label' check, which did not succeed")
        return self.base

    # ------------------------------------------------------------------ checks
    def check_settings(self) -> None:
        lab = self.labeler
        cls = type(lab)
        s = lab.settings
        _require(isinstance(s, cls.settings_cls), f"settings are not a {cls.settings_cls}")
        h = lab.settings_hash
        _require(len(h) == 64 and h == settings_hash(lab.name, s), "settings_hash is not sha256")
        rebuilt = cls.from_kwargs(**json.loads(json.dumps(s.to_dict())))
        _require(rebuilt.settings_hash == h, "settings do not round-trip through to_dict/JSON")
        other = cls(s, executor=Executor(timeout=12345.0, scratch_root=str(self.root / "x")))
        _require(other.settings_hash == h, "the executor changes the settings hash")
        for name in cls.settings_cls.operator_fields():
            moved = cls(s.replace(**{name: str(self.root / "elsewhere")}))
            _require(moved.settings_hash == h, f"operator field {name} changes the settings hash")
        json.dumps(lab.describe())
        for name, value in s.hashed_dict().items():  # a hashed number changes the hash
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            try:
                bump = value + 1 if isinstance(value, int) else value * 1.5 + 0.25
                changed = s.replace(**{name: bump})
            except (ValueError, TypeError):
                continue
            _require(settings_hash(lab.name, changed) != h, f"{name} does not enter the hash")
            return

    def check_state(self) -> None:
        lab = self.labeler
        _require(set(lab.honours) <= set(STATE_KEYS), f"honours {set(lab.honours)} unknown")
        for key in STATE_KEYS:
            atoms = self.atoms()
            if key == "initial_magmoms":
                atoms.set_initial_magnetic_moments([0.5] * len(atoms))
            else:
                atoms.set_initial_charges([1.0] + [0.0] * (len(atoms) - 1))
            if key in lab.honours:
                problem = lab.unhonoured_state(atoms)
                _require(problem is None, f"honours {key} but refuses it: {problem}")
                continue
            outcome = lab.label(atoms)
            _require(
                isinstance(outcome, LabelFailure)
                and outcome.kind is FailureKind.INVALID_INPUT
                and not outcome.attempts,
                f"{key} is not honoured, yet not refused in pre-flight: {outcome!r}"[:300],
            )
        atoms = self.atoms()
        atoms.set_initial_magnetic_moments(np.tile([0.0, 0.0, 0.5], (len(atoms), 1)))
        outcome = lab.label(atoms)
        _require(
            isinstance(outcome, LabelFailure) and outcome.kind is FailureKind.INVALID_INPUT,
            "non-collinear moments are not refused as invalid_input",
        )

    def check_preflight(self) -> None:
        atoms = self.atoms()
        _require(len(atoms) >= 2, "the contract structure needs at least 2 atoms")
        atoms.positions[1] = atoms.positions[0] + [0.1, 0.0, 0.0]
        before, workdir = len(self.runs), self.root / "preflight"
        outcome = self.labeler.label(atoms, workdir=workdir)
        _require(isinstance(outcome, LabelFailure), "atoms 0.1 Å apart were labelled")
        assert isinstance(outcome, LabelFailure)
        _require(outcome.kind is FailureKind.INVALID_INPUT, f"kind {outcome.kind.value}")
        _require(len(self.runs) == before and not outcome.attempts, "the code ran on bad input")
        _require(not workdir.exists(), "a bad input created its workdir")

    def check_label(self) -> None:
        lab, atoms = self.labeler, self.atoms()
        n = len(atoms)
        decorated = atoms.copy()
        decorated.info["contract"] = {"nested": [1, 2]}
        decorated.set_constraint(FixAtoms(indices=[0]))
        decorated.calc = SinglePointCalculator(decorated, energy=123.0)
        self.decorated, self.original = decorated, decorated.copy()
        result = _result(lab.label(decorated, workdir=self.root / "calc"), "label")
        self.base = result
        _require(result.ok and result.status == "ok", "not ok")
        _require(type(result.energy) is float and math.isfinite(result.energy), "energy")
        lo, hi = self.spec.energy_per_atom
        _require(lo < result.energy / n < hi, f"{result.energy / n} eV/atom outside {lo}..{hi}")
        f = result.forces
        _require(f.shape == (n, 3) and f.dtype == np.float64, f"forces {f.shape} {f.dtype}")
        _require(bool(np.all(np.isfinite(f))), "forces not finite")
        if atoms.pbc.all():
            s = result.stress
            _require(s is not None and s.shape == (6,), "no stress (6,) for a 3D-periodic cell")
            assert s is not None
            _require(bool(np.all(np.isfinite(s))) and np.abs(s).max() < 1.0, f"stress {s}")
        else:
            _require(result.stress is None, "stress for a cell not periodic in 3D")
        _require(result.labeler == lab.name and result.settings_hash == lab.settings_hash, "ids")
        _require(bool(result.code_version) and bool(result.host), "code_version/host empty")
        _require(len(result.attempts) == 1 and result.attempts[0].ok, "not one ok attempt")
        _require(len(self.runs) == 1, f"{len(self.runs)} runs for one label")
        back = outcome_from_dict(json.loads(json.dumps(result.to_dict())))
        _require(back.to_dict() == result.to_dict(), "to_dict/outcome_from_dict round trip")
        if lab.uses_scratch:
            _require(
                result.workdir is not None
                and Path(result.workdir).parent == (self.root / "calc").resolve(),
                f"attempt directory {result.workdir} not in the workdir",
            )

    def check_not_mutated(self) -> None:
        self.need_base()
        atoms, before = self.decorated, self.original
        assert atoms is not None and before is not None
        _require(atoms.calc is not None and atoms.calc.results["energy"] == 123.0, "calc")
        for what in ("positions", "numbers", "pbc"):
            _require(np.array_equal(getattr(atoms, what), getattr(before, what)), what)
        _require(np.array_equal(atoms.cell.array, before.cell.array), "cell")
        _require(atoms.info == before.info and set(atoms.arrays) == set(before.arrays), "info")
        _require(list(atoms.constraints[0].index) == [0], "constraints")

    def check_exactly_once(self) -> None:
        first = self.need_base()
        runs = len(self.runs)
        _same_return(first, self.labeler.label(self.atoms(), workdir=self.root / "calc"))
        fresh = self.make(self.root)  # another object (another worker), same settings
        fresh_runs = count_runs(fresh)
        _same_return(first, fresh.label(self.atoms(), workdir=str(self.root / "calc")))
        _require(len(self.runs) == runs and not fresh_runs, "a stored outcome was recomputed")

    def _compare(self, other: Atoms, what: str, perm: np.ndarray | None = None) -> None:
        base = self.need_base()
        result = _result(self.labeler.label(other), what)
        tol_e, tol_f = self.spec.invariance
        de = abs(result.energy - base.energy)
        expected = base.forces if perm is None else base.forces[perm]
        df = float(np.abs(result.forces - expected).max())
        _require(de <= tol_e and df <= tol_f, f"|ΔE| {de:.2e} eV, |ΔF| {df:.2e} eV/Å")

    def check_translation(self) -> None:
        atoms = self.atoms()
        atoms.translate([0.31, -0.17, 0.23])
        self._compare(atoms, "translated")

    def check_permutation(self) -> None:
        atoms = self.atoms()
        perm = np.roll(np.arange(len(atoms)), 1)
        self._compare(atoms[perm], "permuted", perm)

    def check_forces_fd(self) -> None:
        base = self.need_base()
        components, h, tol = self.spec.fd_forces
        numeric = fd_forces(energy_of(self.labeler), self.atoms(), components, h)
        analytic = np.array([base.forces[i, k] for i, k in components])
        _require(np.abs(analytic).max() > 10 * tol, "forces too small to test: pick components")
        diff = float(np.abs(analytic - numeric).max())
        _require(diff <= tol, f"forces {analytic} vs -dE/dx {numeric}: {diff:.2e} > {tol}")

    def check_stress_fd(self) -> None:
        base, atoms = self.need_base(), self.atoms()
        if not atoms.pbc.all():
            raise NotApplicable("the structure is not periodic in 3D: no stress")
        assert base.stress is not None
        voigt, h, tol = self.spec.fd_stress
        numeric = np.array([fd_stress(energy_of(self.labeler), atoms, v, h) for v in voigt])
        analytic = base.stress[list(voigt)]
        diff = float(np.abs(analytic - numeric).max())
        _require(diff <= tol, f"stress {analytic} vs (1/V)dE/dε {numeric}: {diff:.2e} > {tol}")

    def check_failure(self) -> None:
        if self.spec.failing is None:
            raise NotApplicable(
                "no ContractSpec.failing labeler (pre-flight failures: see 'preflight')"
            )
        self.failing = self.spec.failing(self.root)
        self.failure_runs = count_runs(self.failing)
        out = self.failing.label(self.atoms(), workdir=self.root / "failed")
        _require(isinstance(out, LabelFailure), f"the failing labeler succeeded: {out!r}"[:200])
        assert isinstance(out, LabelFailure)
        _require(out.kind in set(FailureKind) and bool(out.message), "kind or message")
        _require(len(self.failure_runs) == len(out.attempts) >= 1, "attempts != runs")
        vocabulary = {k.value for k in FailureKind}
        _require(all(a.status in vocabulary for a in out.attempts), "attempt status vocabulary")
        back = outcome_from_dict(json.loads(json.dumps(out.to_dict())))
        _require(back.to_dict() == out.to_dict(), "to_dict/outcome_from_dict round trip")
        self.failure = out

    def check_failure_once(self) -> None:
        if self.spec.failing is None:
            raise NotApplicable("no ContractSpec.failing labeler")
        _require(self.failure is not None and self.failing is not None, "needs 'failure'")
        assert self.failing is not None and self.failure_runs is not None
        n = len(self.failure_runs)
        _same_return(self.failure, self.failing.label(self.atoms(), workdir=self.root / "failed"))
        _require(len(self.failure_runs) == n, "a stored failure was recomputed")
