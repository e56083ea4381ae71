"""The GAP committee as a :class:`~mlip_core.committee.CommitteeModel` (torch): K fits of
:mod:`mlip_core.gap_backend` evaluated by quippy's ``Potential``, with GAP's own per-atom
predictive sd as ``CommitteeOutput.uncertainty`` (eV). Kept apart from the backend so that
reading a config or the API's schema does not import torch."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .committee import CommitteeOutput
from .neighbors import AtomicGraph

__all__ = ["GapCommittee"]

_QUIP_LOCK = threading.RLock()
"""QUIP keeps Fortran module state; walkers calling it from a thread pool take turns."""


class GapCommittee(nn.Module):
    """K GAP fits as a :class:`~mlip_core.committee.CommitteeModel`; ``predict`` also fills
    ``CommitteeOutput.uncertainty`` with ``sqrt(mean_k local_gap_variance)`` per atom (eV)."""

    def __init__(self, xmls: list[str], species: list[int], cutoff: float) -> None:
        super().__init__()
        if not xmls:
            raise ValueError("a GAP committee needs at least one model")
        self.xmls = list(xmls)
        self._species = [int(z) for z in species]
        self._cutoff = float(cutoff)
        self._pots: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:  # deepcopy / pickle: rebuild quippy lazily
        state = self.__dict__.copy()
        state["_pots"] = None
        return state

    @property
    def species(self) -> list[int]:
        return list(self._species)

    @property
    def cutoff(self) -> float:
        return self._cutoff

    @property
    def n_members(self) -> int:
        return len(self.xmls)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    def select_members(self, indices: list[int]) -> GapCommittee:
        return GapCommittee([self.xmls[i] for i in indices], self._species, self._cutoff)

    def potentials(self) -> list[Any]:
        """The quippy ``Potential`` of each member (built once, from the XML text)."""
        if self._pots is None:
            from quippy.potential import Potential

            pots = []
            with _QUIP_LOCK, tempfile.TemporaryDirectory(prefix="pesflow-gap-") as d:
                for k, xml in enumerate(self.xmls):
                    f = Path(d) / f"gap{k}.xml"
                    f.write_text(xml)
                    pots.append(Potential(param_filename=str(f), calc_args="local_gap_variance"))
            self._pots = pots
        return self._pots

    def _atoms(self, graph: AtomicGraph, b: int) -> Any:
        from ase import Atoms

        sel = (graph.batch == b).cpu().numpy()
        pos = graph.positions.detach().cpu().double().numpy()[sel]
        nums = graph.numbers.cpu().numpy()[sel]
        if float(graph.volume[b]) > 0:
            return Atoms(nums, positions=pos, cell=graph.cell[b].cpu().double().numpy(), pbc=True)
        span = pos.max(0) - pos.min(0) if len(pos) else np.zeros(3)
        box = np.diag(span + 2 * self._cutoff + 10.0)  # QUIP needs a lattice; no images
        return Atoms(nums, positions=pos - pos.min(0) + self._cutoff + 5.0, cell=box, pbc=False)

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """Energies (K, B), forces (K, N, 3), stress (K, B, 3, 3) and uncertainty (N,)."""
        from ase.stress import voigt_6_to_full_3x3_stress

        if create_graph:
            raise NotImplementedError("a GAP committee is not differentiable through torch")
        k, nb, n = self.n_members, graph.n_structures, graph.positions.shape[0]
        energy = np.zeros((k, nb))
        forces = np.zeros((k, n, 3))
        stress = np.zeros((k, nb, 3, 3))
        var = np.zeros((k, n))
        periodic = graph.volume.cpu().numpy() > 0
        batch = graph.batch.cpu().numpy()
        with _QUIP_LOCK:
            pots = self.potentials()
            for b in range(nb):
                sel = batch == b
                atoms = self._atoms(graph, b)
                for m, pot in enumerate(pots):
                    atoms.calc = pot
                    energy[m, b] = atoms.get_potential_energy()
                    forces[m, sel] = atoms.get_forces()
                    var[m, sel] = pot.extra_results["atoms"]["local_gap_variance"]
                    if compute_stress and periodic[b]:
                        stress[m, b] = voigt_6_to_full_3x3_stress(atoms.get_stress())
                    atoms.calc = None
        fdt = graph.positions.dtype
        return CommitteeOutput(
            energy=torch.from_numpy(energy),
            forces=torch.from_numpy(forces).to(fdt) if compute_forces else None,
            stress=(
                torch.from_numpy(stress).to(fdt) if compute_stress and periodic.all() else None
            ),
            uncertainty=torch.from_numpy(np.sqrt(np.clip(var, 0.0, None).mean(0))),
        )
