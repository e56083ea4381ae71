"""Uncertainty-driven dynamics (UDD): MD on the committee mean plus a bias that lowers the
energy where the committee disagrees, so walkers go where the model is unsure.

Kulichenko et al., "Uncertainty-driven dynamics for active learning of interatomic
potentials", Nat. Comput. Sci. 3, 230 (2023); restated by Zaverkin et al., npj Comput. Mater.
10, 83 (2024). With the committee's energy variance
``sigma2 = (1/K) sum_k (E_k - <E>)^2`` (eV^2) of a structure of N atoms:

    E_bias = A * (exp(-sigma2 / (N B^2)) - 1)                  (eV; -A <= E_bias <= 0)
    F_bias = -dE_bias/dR = (A / (N B^2)) exp(-sigma2 / (N B^2)) dsigma2/dR,
    dsigma2/dR_i = -(2/K) sum_k (E_k - <E>) (F_k,i - <F_i>)

(the members' forces are exact gradients, so the bias force is exact too). ``A`` (eV) is the
depth of the bias, ``B`` (eV per sqrt(atom)) the energy spread at which it saturates. The
trust window still judges the unbiased committee: ``forces_committee`` is passed on as the
members computed it, so the deviations, the stop rules and the recorded frames are those of
the model, not of the bias. The bias acts on forces only (no bias stress): ``npt`` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .monitor import Trust

__all__ = ["UDDCalculator", "UDDExplorer", "UDDParams", "udd_bias"]


def udd_bias(
    energies: np.ndarray, forces: np.ndarray, a: float, b: float
) -> tuple[float, np.ndarray]:
    """``(E_bias eV, F_bias (N, 3) eV/Å)`` of member energies ``(K,)`` and forces
    ``(K, N, 3)`` (module docstring)."""
    e = np.asarray(energies, dtype=np.float64)
    f = np.asarray(forces, dtype=np.float64)
    k, n = e.shape[0], f.shape[1]
    de = e - e.mean()
    sigma2 = float(np.mean(de**2))
    w = math.exp(-sigma2 / (n * b * b))
    grad = -(2.0 / k) * np.einsum("k,kni->ni", de, f - f.mean(axis=0))
    return a * (w - 1.0), (a / (n * b * b)) * w * grad


class UDDCalculator(Calculator):
    """A committee calculator with the UDD bias added to ``energy`` / ``forces``; the committee
    keys (``forces_committee``, ``energy_committee``, ...) are the members' own. ``bias_energy``
    (eV) is reported too."""

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces"]

    def __init__(self, committee: Calculator, a: float, b: float) -> None:
        super().__init__()
        self.committee, self.a, self.b = committee, float(a), float(b)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[override]
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()  # type: ignore[union-attr]
        work.calc = self.committee
        work.get_forces()
        res = dict(self.committee.results)
        if "energy_committee" not in res:
            raise ValueError("udd needs the calculator's results['energy_committee'] (K,)")
        eb, fb = udd_bias(res["energy_committee"], res["forces_committee"], self.a, self.b)
        res.pop("stress", None)  # no bias stress: a stress here would not match the forces
        res.update(
            energy=float(res["energy"]) + eb,
            free_energy=float(res["energy"]) + eb,
            forces=np.asarray(res["forces"]) + fb,
            bias_energy=eb,
        )
        self.results = res


@dataclass(frozen=True)
class UDDParams:
    """A UDD walker: as an nvt MD walker (temperature K, timestep fs, steps, record_every,
    friction 1/fs, start, temperature_end K) plus the bias depth ``bias_a`` (eV) and width
    ``bias_b`` (eV per sqrt(atom))."""

    start: int = 0
    temperature: float = 300.0
    temperature_end: float | None = None
    timestep: float = 2.0
    steps: int = 500
    record_every: int = 10
    friction: float = 0.01
    bias_a: float = 0.5
    bias_b: float = 0.01

    def __post_init__(self) -> None:
        for key in ("bias_a", "bias_b"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be finite and > 0, got {value!r}")


@dataclass
class UDDExplorer:
    """Uncertainty-driven Langevin MD from one structure (module docstring)."""

    name: str = "udd"
    params_cls: type = UDDParams
    origin_keys: tuple[str, ...] = ("bias_a", "bias_b")

    def starts(self, params: UDDParams, n_structures: int) -> list[int]:
        return [params.start]

    def temperature(self, params: UDDParams) -> float | None:
        return float(params.temperature)

    def explore(
        self,
        structures: Sequence[Atoms],
        calculator: Calculator,
        trust: Trust,
        params: UDDParams,
        seed: int,
    ) -> Any:
        from .md import WalkerSpec, run_walker

        spec = WalkerSpec(
            ensemble="nvt",
            temperature_K=params.temperature,
            temperature_end_K=params.temperature_end,
            timestep_fs=params.timestep,
            n_steps=params.steps,
            record_every=params.record_every,
            friction=params.friction,
            seed=seed,
            trust=trust,
        )
        res = run_walker(
            structures[0], UDDCalculator(calculator, params.bias_a, params.bias_b), spec
        )
        for f in res.frames:
            f.info.update(bias_a=params.bias_a, bias_b=params.bias_b)
        return res
