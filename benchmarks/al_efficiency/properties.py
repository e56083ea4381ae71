"""Physical property checks of a potential against its oracle.

Plain functions on ASE calculators (no Prefect, no database): the equation of state (lattice
constant and bulk modulus through :class:`ase.eos.EquationOfState`), the cubic elastic constants
C11, C12, C44 from the stress of finite strains, and the vacancy formation energy. Run them on a
trained committee (:class:`mlip_core.calculator.CommitteeCalculator`) and on the reference code
(through :class:`LabelerCalculator`, the same labeler the campaign uses) and compare.

Units: Å, eV; moduli in GPa (converted here, at the user-facing edge).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.eos import EquationOfState
from ase.optimize import BFGS

__all__ = [
    "LabelerCalculator",
    "compare_properties",
    "cubic_elastic_constants",
    "equation_of_state",
    "property_checks",
    "vacancy_formation_energy",
]


class LabelerCalculator(Calculator):
    """An ASE calculator that asks a :class:`dft_adapters.Labeler` (the campaign's oracle).

    A failed label raises ``RuntimeError`` with the labeler's message.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(self, labeler: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labeler = labeler

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        """Label the structure; energy, forces and (periodic cells) stress at once."""
        super().calculate(atoms, list(properties), list(system_changes))
        assert self.atoms is not None
        out = self.labeler.label(self.atoms)
        if not out.ok:
            raise RuntimeError(f"oracle failed: {out.kind}: {out.message}")
        self.results = {
            "energy": float(out.energy),
            "free_energy": float(out.energy),
            "forces": np.asarray(out.forces, dtype=np.float64),
        }
        if out.stress is not None:
            self.results["stress"] = np.asarray(out.stress, dtype=np.float64)


def _crystal(element: str, crystal: str, a: float, repeat: int) -> Atoms:
    return bulk(element, crystal, a=a, cubic=True).repeat(repeat)


def equation_of_state(
    calc: Calculator,
    element: str = "Cu",
    crystal: str = "fcc",
    a_guess: float = 3.61,
    *,
    repeat: int = 2,
    max_strain: float = 0.03,
    n_points: int = 9,
) -> dict[str, float]:
    """Lattice constant (Å), bulk modulus (GPa) and energy per atom (eV) at the minimum.

    Energies of the cubic cell scaled isotropically by ``1 + s`` for ``n_points`` values of
    ``s`` in ``[-max_strain, max_strain]`` around ``a_guess``, fitted by the Birch-Murnaghan
    form of :class:`ase.eos.EquationOfState`.
    """
    volumes, energies = [], []
    n_atoms = 0
    for s in np.linspace(-max_strain, max_strain, n_points):
        at = _crystal(element, crystal, a_guess * (1 + s), repeat)
        at.calc = calc
        n_atoms = len(at)
        volumes.append(at.get_volume())
        energies.append(at.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    a0 = float((v0 / repeat**3) ** (1 / 3))  # volume of one conventional cubic cell
    return {
        "lattice_constant": a0,
        "bulk_modulus_GPa": float(b / units.GPa),
        "energy_per_atom": float(e0 / n_atoms),
    }


def cubic_elastic_constants(
    calc: Calculator,
    element: str = "Cu",
    crystal: str = "fcc",
    a: float = 3.61,
    *,
    repeat: int = 2,
    strain: float = 0.005,
) -> dict[str, float]:
    """C11, C12, C44 (GPa) of a cubic crystal from central differences of the stress.

    Uniaxial strain e_xx = ±``strain`` gives C11 = dσ_xx/de and C12 = dσ_yy/de; the shear
    e_yz = e_zy = ±``strain``/2 (engineering γ = ``strain``) gives C44 = dσ_yz/dγ. Atoms move
    affinely with the cell: exact for a Bravais lattice (fcc, bcc), where no internal
    relaxation exists. ASE's sign convention (tensile stress positive) is used.
    """
    base = _crystal(element, crystal, a, repeat)
    cell0 = base.cell.array.copy()

    def stress(eps: np.ndarray) -> np.ndarray:
        at = base.copy()
        at.set_cell(cell0 @ (np.eye(3) + eps), scale_atoms=True)
        at.calc = calc
        return np.asarray(at.get_stress(voigt=True), dtype=np.float64)

    e_xx = np.zeros((3, 3))
    e_xx[0, 0] = strain
    d_uni = (stress(e_xx) - stress(-e_xx)) / (2 * strain)
    e_yz = np.zeros((3, 3))
    e_yz[1, 2] = e_yz[2, 1] = strain / 2
    d_shear = (stress(e_yz) - stress(-e_yz)) / (2 * strain)
    to_gpa = 1.0 / units.GPa
    return {
        "C11_GPa": float(d_uni[0] * to_gpa),
        "C12_GPa": float(0.5 * (d_uni[1] + d_uni[2]) * to_gpa),
        "C44_GPa": float(d_shear[3] * to_gpa),
    }


def vacancy_formation_energy(
    calc: Calculator,
    element: str = "Cu",
    crystal: str = "fcc",
    a: float = 3.61,
    *,
    repeat: int = 3,
    relax: bool = True,
    fmax: float = 0.01,
    max_steps: int = 200,
) -> dict[str, float]:
    """E_f = E(N-1) - (N-1)/N E(N) in eV, at fixed cell (lattice constant ``a``).

    Returns the unrelaxed value and, if ``relax``, the value after relaxing the positions of
    the defective cell (BFGS to ``fmax`` eV/Å, at most ``max_steps`` steps).
    """
    perfect = _crystal(element, crystal, a, repeat)
    perfect.calc = calc
    e_bulk = perfect.get_potential_energy()
    n = len(perfect)
    vac = perfect.copy()
    del vac[0]
    vac.calc = calc
    out = {"unrelaxed_eV": float(vac.get_potential_energy() - (n - 1) / n * e_bulk)}
    if relax:
        opt = BFGS(vac, logfile=None)
        opt.run(fmax=fmax, steps=max_steps)
        out["relaxed_eV"] = float(vac.get_potential_energy() - (n - 1) / n * e_bulk)
        out["relax_steps"] = float(opt.nsteps)
    return out


def property_checks(
    calc: Calculator,
    element: str = "Cu",
    crystal: str = "fcc",
    a_guess: float = 3.61,
    *,
    relax_vacancy: bool = True,
) -> dict[str, float]:
    """EOS, elastic constants (cubic crystals) and vacancy formation energy of ``calc``.

    Elastic constants and the vacancy are evaluated at the calculator's own lattice constant.
    """
    eos = equation_of_state(calc, element, crystal, a_guess)
    a0 = eos["lattice_constant"]
    out = dict(eos)
    out.update(cubic_elastic_constants(calc, element, crystal, a0))
    vac = vacancy_formation_energy(calc, element, crystal, a0, relax=relax_vacancy)
    out["vacancy_formation_unrelaxed_eV"] = vac["unrelaxed_eV"]
    if "relaxed_eV" in vac:
        out["vacancy_formation_relaxed_eV"] = vac["relaxed_eV"]
    return out


# Absolute energies are arbitrary between codes (a fitted per-element offset): not compared.
_NOT_COMPARED = ("relax_steps", "energy_per_atom")


def compare_properties(
    model: dict[str, float], oracle: dict[str, float], keys: Callable[[str], bool] | None = None
) -> dict[str, dict[str, float]]:
    """Per property: model value, oracle value, and the difference in percent of the oracle."""
    out: dict[str, dict[str, float]] = {}
    for k, ref in oracle.items():
        if k not in model or (keys is not None and not keys(k)) or k in _NOT_COMPARED:
            continue
        val = model[k]
        pct = 100.0 * (val - ref) / abs(ref) if ref != 0 else float("nan")
        out[k] = {"model": float(val), "oracle": float(ref), "diff_percent": float(pct)}
    return out
