"""Mock labelers on ASE's analytic potentials, with deterministic fault injection.

``emt`` (ASE EMT: Al Cu Ag Au Ni Pd Pt H C N O), ``lj`` and ``morse`` (any element, one
parameter set for all pairs). :class:`FaultInjection` makes a given fraction of attempts fail
with each failure kind, decided by a hash of (seed, attempt index, structure) so results are
reproducible and a retry (next attempt index) can succeed; ``delay`` sleeps per attempt for
throughput tests.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import ase
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .base import Labeler, RawLabel
from .results import FailureKind, LabelError
from .settings import Settings

__all__ = [
    "EMTLabeler",
    "EMTSettings",
    "FaultInjection",
    "LJLabeler",
    "LJSettings",
    "MorseLabeler",
    "MorseSettings",
    "structure_fingerprint",
]

EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"})

_FAULT_MESSAGES = {
    FailureKind.SCF_UNCONVERGED: "injected fault: convergence NOT achieved (mock SCF)",
    FailureKind.CRASHED: "injected fault: process exited with status 139 (mock crash)",
    FailureKind.TIMEOUT: "injected fault: wall-clock limit exceeded (mock timeout)",
    FailureKind.INVALID_INPUT: "injected fault: input rejected (mock invalid input)",
    FailureKind.MISSING_EXECUTABLE: "injected fault: executable not found (mock)",
    FailureKind.UNPARSABLE_OUTPUT: "injected fault: output layout unknown (mock 0.0)",
}

SPREAD_KINDS = tuple(k for k in FailureKind if k is not FailureKind.UNPARSABLE_OUTPUT)
"""Kinds :meth:`FaultInjection.spread` splits faults among by default: the failures of a run
(``unparsable_output``, a parser/version mismatch, is injected only when named)."""


def structure_fingerprint(atoms: Atoms, decimals: int = 6) -> str:
    """sha256 of numbers, rounded positions, cell and pbc (stable across copies)."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(atoms.positions, decimals).astype(np.float64).tobytes())
    h.update(np.round(atoms.cell.array, decimals).astype(np.float64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class FaultInjection:
    """Deterministic faults for robustness tests.

    ``rates`` maps a failure kind to the fraction of attempts failing with it (sum <= 1).
    ``delay`` seconds are slept per attempt.
    """

    rates: Mapping[FailureKind, float] = field(default_factory=dict)
    seed: int = 0
    delay: float = 0.0

    def __post_init__(self) -> None:
        rates = {FailureKind(k): float(v) for k, v in self.rates.items()}
        if any(v < 0 for v in rates.values()) or sum(rates.values()) > 1 + 1e-12:
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {rates}")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        object.__setattr__(self, "rates", rates)

    @classmethod
    def spread(
        cls,
        fraction: float,
        kinds: Iterable[FailureKind | str] = SPREAD_KINDS,
        seed: int = 0,
        delay: float = 0.0,
    ) -> FaultInjection:
        """``fraction`` of attempts fail, split equally among ``kinds`` (default:
        :data:`SPREAD_KINDS`)."""
        kinds = [FailureKind(k) for k in kinds]
        return cls({k: fraction / len(kinds) for k in kinds}, seed=seed, delay=delay)

    def decide(self, atoms: Atoms, attempt: int) -> FailureKind | None:
        """The fault for this (structure, attempt), or ``None``."""
        if not self.rates:
            return None
        digest = hashlib.sha256(
            f"{self.seed}|{attempt}|{structure_fingerprint(atoms)}".encode()
        ).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        acc = 0.0
        for kind in FailureKind:  # fixed order: deterministic
            acc += self.rates.get(kind, 0.0)
            if u < acc:
                return kind
        return None


@dataclass(frozen=True)
class EMTSettings(Settings):
    """ASE EMT (no parameters beyond the element set)."""

    asap_cutoff: bool = False


@dataclass(frozen=True)
class LJSettings(Settings):
    """Lennard-Jones for any element: one sigma (Å), epsilon (eV), cutoff rc (Å, default 3 sigma);
    ``smooth`` tapers energy and forces to zero at rc so forces stay the exact gradient."""

    sigma: float = 2.0
    epsilon: float = 0.05
    rc: float | None = None
    smooth: bool = True

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.epsilon <= 0:
            raise ValueError("LJ sigma and epsilon must be positive")


@dataclass(frozen=True)
class MorseSettings(Settings):
    """Morse for any element: well depth epsilon (eV), minimum r0 (Å), stiffness rho0,
    smooth cutoff between rcut1*r0 and rcut2*r0."""

    epsilon: float = 1.0
    r0: float = 2.5
    rho0: float = 6.0
    rcut1: float = 1.9
    rcut2: float = 2.7


class _MockLabeler(Labeler):
    """Shared logic of the analytic mocks (in-process, no scratch files)."""

    uses_scratch: ClassVar[bool] = False

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        faults: FaultInjection | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, **kwargs)
        self.faults = faults or FaultInjection()

    def _calculator(self, settings: Any) -> Calculator:
        raise NotImplementedError

    def _compute(
        self, atoms: Atoms, settings: Settings, directory: Path | None, attempt: int
    ) -> RawLabel:
        if self.faults.delay:
            time.sleep(self.faults.delay)
        fault = self.faults.decide(atoms, attempt)
        if fault is not None:
            raise LabelError(fault, _FAULT_MESSAGES[fault])
        atoms.calc = self._calculator(settings)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=True) if atoms.pbc.all() else None
        return RawLabel(energy, forces, stress, f"ase-{ase.__version__}")


class EMTLabeler(_MockLabeler):
    """ASE EMT mock (Al Cu Ag Au Ni Pd Pt H C N O)."""

    name: ClassVar[str] = "emt"
    settings_cls: ClassVar[type[Settings]] = EMTSettings

    def check_inputs(self, atoms: Atoms, settings: Settings) -> str | None:
        """EMT has parameters for 11 elements only."""
        bad = sorted(set(atoms.get_chemical_symbols()) - EMT_ELEMENTS)
        if bad:
            return f"EMT has no parameters for element(s) {', '.join(bad)}; supported: {', '.join(sorted(EMT_ELEMENTS))}"
        return None

    def _calculator(self, settings: Any) -> Calculator:
        from ase.calculators.emt import EMT

        return EMT(asap_cutoff=settings.asap_cutoff)


class LJLabeler(_MockLabeler):
    """Lennard-Jones mock, any element."""

    name: ClassVar[str] = "lj"
    settings_cls: ClassVar[type[Settings]] = LJSettings

    def _calculator(self, settings: Any) -> Calculator:
        from ase.calculators.lj import LennardJones

        return LennardJones(
            sigma=settings.sigma, epsilon=settings.epsilon, rc=settings.rc, smooth=settings.smooth
        )


class MorseLabeler(_MockLabeler):
    """Morse mock, any element."""

    name: ClassVar[str] = "morse"
    settings_cls: ClassVar[type[Settings]] = MorseSettings

    def _calculator(self, settings: Any) -> Calculator:
        from ase.calculators.morse import MorsePotential

        return MorsePotential(
            epsilon=settings.epsilon,
            r0=settings.r0,
            rho0=settings.rho0,
            rcut1=settings.rcut1,
            rcut2=settings.rcut2,
        )
