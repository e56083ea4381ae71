"""ASE calculator for a committee model, following ASE's results contract.

``energy``, ``free_energy``, ``forces``, ``stress`` (Voigt, eV/Å^3) are the committee means, so
any ASE tool (MD, relaxations, EOS, phonons, NEB) uses the mean potential. Extra keys, all in
``implemented_properties`` so ``calc.get_property(name)`` works:

- ``energy_committee`` (K,), ``forces_committee`` (K, N, 3), ``stress_committee`` (K, 6): members;
- ``energy_std`` (eV): population std of member energies;
- ``forces_std`` (N,): per-atom force deviation sigma_i (eV/Å);
- ``max_force_dev`` (eV/Å): max_i sigma_i, the frame's uncertainty (DP-GEN ``max_devi_f``);
- ``max_force_dev_rel``: max_i sigma_i / (|<F_i>| + eps), the relative variant;
- ``uncertainty`` (N,), ``max_uncertainty`` and ``uncertainty_source = "model"``: only when the
  model reports its own per-atom uncertainty (``CommitteeOutput.uncertainty``: a GAP's
  predictive sd of the local energy, eV, :mod:`mlip_core.gap_backend`); the trust window then
  judges that, while ``forces_std`` / ``max_force_dev`` stay the member spread in eV/Å.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlip_core.model import CommitteeModel
from mlip_core.monitor import DistanceGuard
from mlip_core.neighbors import build_graph
from mlip_core.uncertainty import atomic_force_deviation, energy_deviation
from mlip_core.validation import StructureError, check_structure

__all__ = ["COMMITTEE_PROPERTIES", "CommitteeCalculator"]

COMMITTEE_PROPERTIES = (
    "energy_committee",
    "forces_committee",
    "stress_committee",
    "energy_std",
    "forces_std",
    "max_force_dev",
    "max_force_dev_rel",
)


class CommitteeCalculator(Calculator):
    """ASE calculator evaluating all committee members in one batched call.

    Args:
        model: a :class:`~mlip_core.model.CommitteeModel` (2 or more members for deviations).
        min_distance: refuse structures with two atoms closer than this, Å (0: no check), or
            a :class:`~mlip_core.monitor.DistanceGuard` (an exploration passes its trust's
            guard, so the calculator and the monitor apply one rule).
        relative_eps: regulariser of the relative force deviation, eV/Å.
        device: torch device for the graph (the model must already be there).
    """

    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        *COMMITTEE_PROPERTIES,
    ]

    def __init__(
        self,
        model: CommitteeModel,
        *,
        min_distance: float | DistanceGuard = 0.5,
        relative_eps: float = 1.0,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.guard = (
            min_distance
            if isinstance(min_distance, DistanceGuard)
            else DistanceGuard(float(min_distance))
        )
        self.relative_eps = float(relative_eps)
        self.device = torch.device(device)
        if isinstance(model, torch.nn.Module):
            model.eval()

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype the model computes in."""
        return getattr(self.model, "dtype", torch.float64)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        """Evaluate the committee; fills every property at once (they share one pass)."""
        super().calculate(atoms, properties, system_changes)
        at = self.atoms
        assert at is not None
        absolute = self.guard.min_distance
        check_structure(at, self.model.species, min_distance=absolute or 0.0)
        close = self.guard.violation(at) if absolute is None else None
        if close is not None:
            raise StructureError(f"atoms too close: {self.guard.message(at, close)}")
        periodic = bool(np.all(at.pbc))
        graph = build_graph(
            at,
            self.model.cutoff,
            {z: i for i, z in enumerate(self.model.species)},
            dtype=self.dtype,
            device=self.device,
        )
        out = self.model.predict(graph, compute_forces=True, compute_stress=periodic)
        energies = out.energy[:, 0].detach().cpu().double().numpy()
        forces = out.forces.detach().cpu().double().numpy()  # type: ignore[union-attr]
        if not (np.isfinite(energies).all() and np.isfinite(forces).all()):
            raise FloatingPointError("committee produced non-finite energies or forces")
        res: dict[str, Any] = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "forces": forces.mean(axis=0),
            "energy_committee": energies,
            "forces_committee": forces,
        }
        if len(energies) >= 2:
            sigma = atomic_force_deviation(forces)
            sigma_rel = atomic_force_deviation(forces, relative=True, eps=self.relative_eps)
            res.update(
                energy_std=energy_deviation(energies),
                forces_std=sigma,
                max_force_dev=float(sigma.max()),
                max_force_dev_rel=float(sigma_rel.max()),
            )
        else:
            res.update(
                energy_std=0.0,
                forces_std=np.zeros(len(at)),
                max_force_dev=0.0,
                max_force_dev_rel=0.0,
            )
        if out.uncertainty is not None:  # the model's own (a GP's sd, eV), not the spread
            u = out.uncertainty.detach().cpu().double().numpy()
            res.update(uncertainty=u, max_uncertainty=float(u.max()), uncertainty_source="model")
        if periodic and out.stress is not None:
            s = out.stress[:, 0].detach().cpu().double().numpy()
            members = np.stack([full_3x3_to_voigt_6_stress(x) for x in s])
            res["stress_committee"] = members
            res["stress"] = members.mean(axis=0)
        self.results = res
