"""PySCF backend, in-process: one SCF, then analytic gradients (and, for periodic cells, the
analytic stress) from that same SCF. PySCF works in Hartree and Bohr; results are converted to
eV and Å here. Non-convergence is only visible as ``mf.converged == False``; it is checked.

Molecules (``atoms.pbc`` all False) use ``pyscf.gto``/``pyscf.dft``; cells periodic in all three
directions use ``pyscf.pbc`` with GTH pseudopotentials and a Monkhorst–Pack k-point grid
(LDA/GGA only: PySCF has no stress for hybrids). Partially periodic cells are rejected.
The executor's ``timeout`` is checked after every SCF cycle (an SCF callback); a single
cycle or the gradient cannot be interrupted.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from .base import Labeler, RawLabel
from .results import FailureKind, LabelError
from .settings import AuthorSettingsError, Settings
from .state import total_charge

__all__ = ["PySCFLabeler", "PySCFSettings"]


@dataclass(frozen=True)
class PySCFSettings(Settings):
    """What PySCF computes.

    ``xc`` is a libxc functional string (``None``: Hartree–Fock); ``basis`` any PySCF basis name
    (periodic cells need a GTH basis such as ``"gth-szv"``); ``pseudo`` the pseudopotential for
    periodic cells; ``conv_tol`` in Hartree; ``mixing`` = 1 - PySCF's damping factor;
    ``kpts`` the k-point grid for periodic cells; ``spin`` is 2S. PySCF reads a basis or
    pseudopotential *file* when the name is an existing path (relative to the working
    directory), so from a campaign author both are names without ``.``, ``/`` or ``\\``
    (:meth:`_check_author`).
    """

    xc: str | None = "pbe"
    basis: str = "def2-svp"
    charge: int = 0
    spin: int = 0
    max_scf_steps: int = 100
    mixing: float = 1.0
    conv_tol: float = 1e-10
    grid_level: int = 3
    pseudo: str = "gth-pade"
    kpts: tuple[int, int, int] = (1, 1, 1)

    def __post_init__(self) -> None:
        if self.max_scf_steps < 1 or not 0 < self.mixing <= 1 or self.conv_tol <= 0:
            raise ValueError(
                "PySCFSettings needs max_scf_steps >= 1, 0 < mixing <= 1, conv_tol > 0"
            )
        object.__setattr__(self, "kpts", tuple(int(k) for k in self.kpts))

    @classmethod
    def _check_author(cls, values: Mapping[str, Any]) -> None:
        """``basis`` and ``pseudo`` are library names, never file names."""
        for key in ("basis", "pseudo"):
            if key in values and not _LIBRARY_NAME.fullmatch(str(values[key])):
                raise AuthorSettingsError(
                    f"{key}: must be a PySCF library name (letters, digits, '-+*(),@_'; "
                    "no '.', '/' or file names)"
                )


_LIBRARY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9()*+,@_-]*")


def spin_of(atoms: Atoms, settings: PySCFSettings) -> int:
    """2S for PySCF: ``settings.spin``. PySCF fixes the total spin and takes no per-atom
    moments, so a structure's initial moments must agree with it (|sum m| = 2S, all of one
    sign): otherwise ``LabelError`` (``invalid_input``) — an antiferromagnetic start or moments
    meant as a loose guess cannot be passed, and the spin state is the user's choice."""
    m = atoms.get_initial_magnetic_moments()
    if not np.any(m):
        return settings.spin
    if np.any(m > 0) and np.any(m < 0):
        raise LabelError(
            FailureKind.INVALID_INPUT,
            "PySCF takes a total spin (2S), not per-atom moments: the structure's moments of "
            "both signs (an antiferromagnetic start) cannot be passed",
        )
    total = abs(float(m.sum()))
    if abs(total - settings.spin) > 1e-6:
        raise LabelError(
            FailureKind.INVALID_INPUT,
            f"PySCF fixes the total spin 2S = settings.spin ({settings.spin}); the structure's "
            f"initial moments sum to {total:g} μB: set labeler.settings.spin to the spin state "
            "wanted (the moments must agree with it)",
        )
    return settings.spin


class PySCFLabeler(Labeler):
    """PySCF driven directly (registry name ``pyscf``); the log goes to ``pyscf.log``."""

    name: ClassVar[str] = "pyscf"
    settings_cls: ClassVar[type[Settings]] = PySCFSettings
    honours: ClassVar[frozenset[str]] = frozenset({"initial_magmoms", "initial_charges"})

    def check_inputs(self, atoms: Atoms, settings: Settings) -> str | None:
        """pyscf importable, no partial periodicity, a basis for every element, sane spin."""
        try:
            import pyscf  # noqa: F401
        except ImportError as exc:
            raise LabelError(
                FailureKind.MISSING_EXECUTABLE, f"pyscf is not importable: {exc}"
            ) from exc
        if atoms.pbc.any() and not atoms.pbc.all():
            return f"pyscf backend supports molecules or fully periodic cells, not pbc={atoms.pbc.tolist()}"
        try:
            self._build(atoms, settings, None)  # type: ignore[arg-type]
        except LabelError:
            raise
        except Exception as exc:
            return f"pyscf rejected the input: {type(exc).__name__}: {exc}"
        return None

    def _build(self, atoms: Atoms, settings: PySCFSettings, log: Path | None) -> Any:
        """The PySCF ``Mole`` or ``Cell`` for ``atoms`` (positions in Å)."""
        from pyscf import gto
        from pyscf.pbc import gto as pbcgto

        symbols = atoms.get_chemical_symbols()
        geometry = [
            (s, tuple(float(x) for x in p)) for s, p in zip(symbols, atoms.positions, strict=True)
        ]
        for element in sorted(set(symbols)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "install basis-set-exchange" hint
                    found = gto.basis.load(settings.basis, element)
            except Exception as exc:
                raise LabelError(
                    FailureKind.INVALID_INPUT,
                    f"basis {settings.basis!r} has no entry for element {element}: {exc}",
                ) from exc
            if not found:
                raise LabelError(
                    FailureKind.INVALID_INPUT,
                    f"basis {settings.basis!r} has no entry for element {element}",
                )
        common: dict[str, Any] = {
            "atom": geometry,
            "basis": settings.basis,
            "charge": total_charge(atoms, settings.charge),
            "spin": spin_of(atoms, settings),
            "unit": "Angstrom",
            "verbose": 0,
        }
        if atoms.pbc.all():
            system = pbcgto.Cell()
            system.build(a=np.asarray(atoms.cell.array), pseudo=settings.pseudo, **common)
        else:
            system = gto.Mole()
            system.build(**common)
        if log is not None:  # PySCF's own log, the raw output of this attempt
            system.stdout = open(log, "w")  # noqa: SIM115 - closed in _compute
            system.verbose = 4
        return system

    def _compute(
        self, atoms: Atoms, settings: Settings, directory: Path | None, attempt: int
    ) -> RawLabel:
        import pyscf

        assert isinstance(settings, PySCFSettings)
        log = directory / "pyscf.log" if directory is not None else None
        system = self._build(atoms, settings, log)
        try:
            periodic = bool(atoms.pbc.all())
            mf = self._mean_field(system, settings, periodic)
            self._install_timeout(mf)
            energy_ha = mf.kernel()
            if not mf.converged:
                raise LabelError(
                    FailureKind.SCF_UNCONVERGED,
                    f"PySCF SCF not converged in {settings.max_scf_steps} cycles "
                    f"(last E = {float(energy_ha):.10f} Ha, conv_tol = {settings.conv_tol:g} Ha)",
                )
            grad = mf.nuc_grad_method()
            grad.verbose = 0
            gradient = np.asarray(grad.kernel(), dtype=float)  # Hartree/Bohr
            stress = None
            if periodic:
                sigma = np.asarray(grad.get_stress(), dtype=float)  # Hartree/Bohr^3, (1/V) dE/de
                sym = 0.5 * (sigma + sigma.T)
                stress = sym[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] * Hartree / Bohr**3
        finally:
            stdout = getattr(system, "stdout", None)
            if log is not None and stdout is not None and hasattr(stdout, "close"):
                stdout.close()
        return RawLabel(
            energy=float(energy_ha) * Hartree,
            forces=-gradient * Hartree / Bohr,
            stress=stress,
            code_version=f"pyscf {pyscf.__version__}",
            resolved={"method": "HF" if settings.xc is None else f"KS/{settings.xc}"},
        )

    def _install_timeout(self, mf: Any) -> None:
        """Make the SCF raise a ``timeout`` failure once ``executor.timeout`` has passed."""
        limit = self.executor.timeout
        if limit is None:
            return
        start = time.perf_counter()

        def check(envs: dict[str, Any]) -> None:
            elapsed = time.perf_counter() - start
            if elapsed > limit:
                raise LabelError(
                    FailureKind.TIMEOUT,
                    f"PySCF SCF stopped after cycle {envs.get('cycle', '?')}: "
                    f"{elapsed:.3g} s exceeds the {limit} s limit",
                )

        mf.callback = check

    def _mean_field(self, system: Any, settings: PySCFSettings, periodic: bool) -> Any:
        open_shell = system.spin != 0  # settings.spin or the initial moments (spin_of)
        if periodic:
            from pyscf.pbc import dft as pdft
            from pyscf.pbc import scf as pscf

            kpts = system.make_kpts(list(settings.kpts))
            if settings.xc is None:
                mf = (pscf.KUHF if open_shell else pscf.KRHF)(system, kpts=kpts)
            else:
                mf = (pdft.KUKS if open_shell else pdft.KRKS)(system, kpts=kpts)
        else:
            from pyscf import dft, scf

            if settings.xc is None:
                mf = (scf.UHF if open_shell else scf.RHF)(system)
            else:
                mf = (dft.UKS if open_shell else dft.RKS)(system)
        if settings.xc is not None:
            mf.xc = settings.xc
            if not periodic:
                mf.grids.level = settings.grid_level
        mf.max_cycle = int(settings.max_scf_steps)
        mf.conv_tol = float(settings.conv_tol)
        mf.damp = 1.0 - float(settings.mixing)
        return mf
