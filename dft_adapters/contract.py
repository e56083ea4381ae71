"""The labeler contract, shipped so an out-of-tree backend checks itself the way pesflow checks
its own (like torch-sim's model validator)::

    from dft_adapters.contract import ContractSpec, check_labeler

    report = check_labeler(MyLabeler(), my_structure, spec=ContractSpec(failing=make_failing))
    report.raise_for_failures()  # AssertionError listing every failed check

Each check (:data:`CHECKS`) ends ``passed``, ``failed`` (with what differed) or ``skipped`` —
only for a reason: one given in :attr:`ContractSpec.skip` (e.g. "no VASP binary here") or a
check that does not apply (no stress for a structure not periodic in 3D). Nothing passes
silently. Units: eV, eV/Å, eV/Å^3 (ASE Voigt order xx yy zz yz xz xy and sign:
σ = (1/V) ∂E/∂ε, positive under tension).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from ase.build import bulk

from .base import Labeler
from .contract_checks import Checks, NotApplicable, energy_of, fd_forces, fd_stress

__all__ = [
    "CHECKS",
    "CheckResult",
    "ContractReport",
    "ContractSpec",
    "check_labeler",
    "contract_structure",
    "energy_of",
    "fd_forces",
    "fd_stress",
]

CHECKS = (
    "settings",
    "state",
    "preflight",
    "label",
    "not_mutated",
    "exactly_once",
    "translation",
    "permutation",
    "forces_fd",
    "stress_fd",
    "failure",
    "failure_once",
)
"""The checks in the order they run (``label`` is the one computed label most others reuse)."""

Status = Literal["passed", "failed", "skipped"]


def contract_structure() -> Atoms:
    """Default structure: a rattled, slightly sheared conventional fcc Cu cell (4 atoms, 3D
    periodic; forces and shear stress non-zero)."""
    atoms = bulk("Cu", "fcc", a=3.60, cubic=True)
    strain = np.array([[1.0, 0.02, 0], [0, 0.99, 0.01], [0, 0, 1.01]])
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


@dataclass(frozen=True)
class ContractSpec:
    """How a labeler is checked.

    ``energy_per_atom``: plausible range, eV/atom (catches Hartree/Ry-for-eV mistakes).
    ``fd_forces``: ((atom, axis), ...), step h (Å), tolerance (eV/Å) of F = -∂E/∂x by central
    differences. ``fd_stress``: (Voigt components, strain step, tolerance eV/Å^3).
    ``invariance``: (energy tolerance eV, force tolerance eV/Å) under translation and atom
    permutation. ``failing``: builds (from a scratch directory) a labeler whose every attempt
    fails. ``skip``: check name -> the documented reason it cannot run for this labeler.
    """

    energy_per_atom: tuple[float, float] = (-1e5, 1e5)
    fd_forces: tuple[tuple[tuple[int, int], ...], float, float] = (((0, 0),), 1e-3, 1e-3)
    fd_stress: tuple[tuple[int, ...], float, float] = ((5,), 1e-4, 1e-3)
    invariance: tuple[float, float] = (1e-6, 1e-5)
    failing: Callable[[Path], Labeler] | None = None
    skip: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(CHECKS))
        if unknown:
            raise ValueError(f"ContractSpec.skip: unknown check(s) {unknown}; checks: {CHECKS}")


@dataclass(frozen=True)
class CheckResult:
    """One check: ``status`` and, unless passed, why."""

    name: str
    status: Status
    detail: str = ""


@dataclass(frozen=True)
class ContractReport:
    """All checks of one labeler."""

    labeler: str
    results: tuple[CheckResult, ...]

    def by_status(self, status: Status) -> dict[str, str]:
        """Check name -> detail of the checks with ``status``."""
        return {r.name: r.detail for r in self.results if r.status == status}

    @property
    def failed(self) -> dict[str, str]:
        """Failed checks -> what differed."""
        return self.by_status("failed")

    @property
    def skipped(self) -> dict[str, str]:
        """Skipped checks -> the reason."""
        return self.by_status("skipped")

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` naming every failed check (skips are not failures)."""
        if self.failed:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        lines = [f"labeler contract of {self.labeler!r}:"]
        lines += [
            f"  {r.status:7} {r.name}" + (f": {r.detail}" if r.detail else "") for r in self.results
        ]
        return "\n".join(lines)


def check_labeler(
    labeler: Labeler | Callable[[Path], Labeler],
    atoms_factory: Callable[[], Atoms] = contract_structure,
    *,
    spec: ContractSpec | None = None,
    workdir: str | Path | None = None,
    checks: Iterable[str] | None = None,
) -> ContractReport:
    """Run the labeler contract (:data:`CHECKS`) and return a report (raises nothing for a
    failed check; call :meth:`ContractReport.raise_for_failures`).

    ``labeler``: the labeler, or a function building one from a scratch directory (called
    again for the "another worker" part of ``exactly_once``). ``atoms_factory``: a fresh copy
    of a small structure the labeler supports (≥ 2 atoms, non-zero forces; 3D-periodic to
    check stress). ``workdir``: where calculations go (default: a temporary directory, removed
    afterwards). ``checks``: a subset of :data:`CHECKS` (default all). Raises ``ValueError``
    for an unknown check name.
    """
    spec = spec or ContractSpec()
    wanted = list(CHECKS if checks is None else checks)
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; checks: {CHECKS}")
    with tempfile.TemporaryDirectory(prefix="pesflow-contract-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        run = Checks(labeler, atoms_factory, spec, root)
        results = []
        for name in CHECKS:
            if name not in wanted:
                continue
            if name in spec.skip:
                results.append(CheckResult(name, "skipped", spec.skip[name]))
                continue
            try:
                getattr(run, f"check_{name}")()
            except NotApplicable as why:
                results.append(CheckResult(name, "skipped", str(why)))
            except Exception as exc:  # a check that fails or blows up is a failed check
                detail = str(exc) if isinstance(exc, AssertionError) else repr(exc)
                results.append(CheckResult(name, "failed", detail))
            else:
                results.append(CheckResult(name, "passed"))
    return ContractReport(run.labeler.name, tuple(results))
