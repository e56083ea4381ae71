"""Optional MACE backend (``pip install 'pesflow[mace]'``) behind the committee-model interface.

A MACE model computes its own forces by autograd inside ``forward``, so K MACE members cannot
be stacked into one network like the native model: :class:`MaceMember` adapts one MACE model to
:class:`~mlip_core.model.CommitteeModel` and a :class:`~mlip_core.model.LoopCommittee` of them is
the committee (cost ~K x one model). The neighbor graph is still built once per structure.

Training MACE members is done with MACE's own trainer on pesflow's ``--format mace`` export
(``mace_run_train --train_file=dataset.extxyz --energy_key=REF_energy --forces_key=REF_forces
--stress_key=REF_stress --E0s='{29: ...}'``: the isolated-atom energies are in the export's
``e0s.json`` and the whole command in its ``mace_run_train.txt``); :func:`load_mace_committee` then
loads the K trained model files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteeOutput, LoopCommittee
from mlip_core.neighbors import AtomicGraph


def _import_mace():
    """Import e3nn and mace without leaving ``weights_only`` loading switched off.

    ``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process, which
    would let any later ``torch.load`` without an explicit ``weights_only`` unpickle code.
    e3nn's constants only need ``slice`` allow-listed; the variable is restored afterwards.
    """
    import contextlib
    import io
    import os

    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:  # mace prints a note about optional GPU kernels on import: not the user's concern
        with torch.serialization.safe_globals([slice]), contextlib.redirect_stdout(io.StringIO()):
            from e3nn import o3 as e3nn_o3
            from mace import modules
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before
    return e3nn_o3, modules


try:  # optional dependency
    o3, mace_modules = _import_mace()
except ImportError as exc:  # pragma: no cover - exercised where mace is absent
    raise ImportError("the MACE backend needs mace-torch: pip install 'pesflow[mace]'") from exc

__all__ = [
    "MaceMember",
    "graph_to_mace_inputs",
    "load_mace_committee",
    "mace_committee",
    "mace_committee_calculator",
]


def graph_to_mace_inputs(
    graph: AtomicGraph, n_species: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """MACE's batched input dict from pesflow's dense padded graph (edges i -> j, shifts S@cell)."""
    n = graph.positions.shape[0]
    sender = torch.arange(n, device=graph.neighbors.device).unsqueeze(1).expand_as(graph.neighbors)
    src, dst = sender[graph.mask], graph.neighbors[graph.mask]
    shifts = graph.shifts[graph.mask].to(dtype)
    cell = graph.cell.to(dtype)
    periodic = (graph.volume > 0)[graph.batch[src]]
    unit = torch.zeros_like(shifts)
    if bool(periodic.any()):
        c = cell[graph.batch[src[periodic]]]
        unit[periodic] = (
            torch.linalg.solve(c.transpose(-1, -2), shifts[periodic].unsqueeze(-1))
            .squeeze(-1)
            .round()
        )
    ptr = torch.zeros(graph.n_structures + 1, dtype=torch.long, device=graph.n_atoms.device)
    ptr[1:] = torch.cumsum(graph.n_atoms, 0)
    return {
        "positions": graph.positions.to(dtype).clone(),
        "node_attrs": torch.nn.functional.one_hot(graph.species, n_species).to(dtype),
        "edge_index": torch.stack([src, dst]),
        "shifts": shifts,
        "unit_shifts": unit,
        "cell": cell.reshape(-1, 3),
        "batch": graph.batch,
        "ptr": ptr,
    }


class MaceMember(nn.Module):
    """One MACE model as a 1-member :class:`~mlip_core.model.CommitteeModel`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._species = [int(z) for z in model.atomic_numbers.tolist()]
        self._cutoff = float(model.r_max)

    @property
    def species(self) -> list[int]:
        """Atomic numbers of the MACE model (its z-table order)."""
        return list(self._species)

    @property
    def cutoff(self) -> float:
        """MACE r_max, Å."""
        return self._cutoff

    @property
    def n_members(self) -> int:
        """Always 1."""
        return 1

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the wrapped model."""
        return next(self.model.parameters()).dtype

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """Energies (1, B), forces (1, N, 3), stress (1, B, 3, 3) from the MACE model."""
        data = graph_to_mace_inputs(graph, len(self._species), self.dtype)
        with torch.enable_grad():
            out = self.model(
                data,
                training=create_graph,
                compute_force=compute_forces,
                compute_stress=compute_stress,
            )
        energy = out["energy"].to(torch.float64).unsqueeze(0)
        forces = out["forces"].unsqueeze(0) if compute_forces else None
        stress = (
            out["stress"].unsqueeze(0) if compute_stress and out.get("stress") is not None else None
        )
        if not create_graph:
            energy = energy.detach()
            forces = None if forces is None else forces.detach()
            stress = None if stress is None else stress.detach()
        return CommitteeOutput(energy=energy, forces=forces, stress=stress)


def _new_mace(species: Sequence[int], cutoff: float, seed: int, avg_neighbors: float) -> nn.Module:
    torch.manual_seed(seed)
    block = mace_modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return mace_modules.ScaleShiftMACE(
        r_max=cutoff,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=2,
        num_elements=len(species),
        hidden_irreps=o3.Irreps("32x0e"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(species)),
        avg_num_neighbors=avg_neighbors,
        atomic_numbers=sorted(int(z) for z in species),
        correlation=2,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
        radial_MLP=[32, 32],
    )


def mace_committee(
    k: int,
    species: Sequence[int],
    *,
    cutoff: float = 5.0,
    seeds: Sequence[int] | None = None,
    avg_neighbors: float = 40.0,
    dtype: torch.dtype = torch.float32,
) -> LoopCommittee:
    """K freshly initialised small ScaleShiftMACE members (2 layers, 32x0e, l <= 2, correlation 2)."""
    seeds = list(seeds) if seeds is not None else list(range(k))
    if len(seeds) != k:
        raise ValueError(f"{len(seeds)} seeds for {k} members")
    return LoopCommittee(
        [MaceMember(_new_mace(species, cutoff, s, avg_neighbors).to(dtype)) for s in seeds]
    )


def load_mace_committee(paths: Sequence[str | Path], device: str = "cpu") -> LoopCommittee:
    """Load K MACE model files (as saved by ``mace_run_train``) into one committee.

    MACE saves whole pickled modules, so these files are loaded with ``weights_only=False``:
    load only model files you trained yourself.
    """
    if len(paths) < 1:
        raise ValueError("no MACE model files given")
    members = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no MACE model at {p}")
        members.append(MaceMember(torch.load(p, map_location=device, weights_only=False)))
    return LoopCommittee(members)


def mace_committee_calculator(
    k: int, species: Sequence[int], device: str = "cpu"
) -> CommitteeCalculator:
    """ASE committee calculator over K freshly initialised MACE members (benchmarks, tests)."""
    committee = mace_committee(k, species).to(device)
    return CommitteeCalculator(committee, device=device)
