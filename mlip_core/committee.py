"""The committee-model interface and the loop committee.

:class:`CommitteeModel` is what the calculator, MD, training and selection need from a model
(``predict`` on an :class:`~mlip_core.neighbors.AtomicGraph`); :class:`LoopCommittee` evaluates
separate member models one after another (wrapped external models such as MACE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mlip_core.neighbors import AtomicGraph

__all__ = ["CommitteeModel", "CommitteeOutput", "LoopCommittee", "evaluate"]


@dataclass
class CommitteeOutput:
    """Per-member predictions for a batch.

    Attributes:
        energy: ``(K, B)`` total energies, eV.
        forces: ``(K, N, 3)`` forces, eV/Å (None when not requested).
        stress: ``(K, B, 3, 3)`` stress tensors, eV/Å^3 (None when not requested or non-periodic).
        uncertainty: ``(N,)`` the model's own per-atom uncertainty, used instead of the
            member force deviation when set (a GP's predictive sd, :mod:`mlip_core.gap_backend`);
            None for committees whose uncertainty is their spread.
    """

    energy: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    uncertainty: torch.Tensor | None = None


@runtime_checkable
class CommitteeModel(Protocol):
    """What the calculator, MD and training need from a committee model.

    Implementations: :class:`CommitteePotential` (stacked, the default), :class:`LoopCommittee`
    (members evaluated one after another; also the shape of wrapped external models).
    """

    @property
    def species(self) -> list[int]:
        """Atomic numbers known to the model."""
        ...

    @property
    def cutoff(self) -> float:
        """Cutoff radius, Å."""
        ...

    @property
    def n_members(self) -> int:
        """Committee size K."""
        ...

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """Energies (and forces, stress) of every member for a graph batch."""
        ...


class LoopCommittee(nn.Module):
    """A committee whose members are separate models evaluated one after another.

    Used for the "committee as a loop" benchmark and to wrap external single models (MACE)
    behind the same :class:`CommitteeModel` interface.
    """

    def __init__(self, members: list[CommitteeModel]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a LoopCommittee needs at least one member")
        first = members[0]
        for m in members[1:]:
            if m.species != first.species or m.cutoff != first.cutoff:
                raise ValueError("all committee members must share species and cutoff")
        self.members = nn.ModuleList(members)  # type: ignore[arg-type]

    @property
    def species(self) -> list[int]:
        """Atomic numbers known to the model."""
        return self.members[0].species

    @property
    def species_index(self) -> dict[int, int]:
        """Map atomic number -> species index."""
        return {z: i for i, z in enumerate(self.species)}

    @property
    def cutoff(self) -> float:
        """Cutoff radius, Å."""
        return self.members[0].cutoff

    @property
    def n_members(self) -> int:
        """Total committee size."""
        return sum(m.n_members for m in self.members)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the first member's parameters."""
        return next(self.parameters()).dtype

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """Evaluate each member model and stack the results along the member axis."""
        outs = [
            m.predict(
                graph,
                compute_forces=compute_forces,
                compute_stress=compute_stress,
                create_graph=create_graph,
            )
            for m in self.members
        ]

        def cat(name: str) -> torch.Tensor | None:
            vals = [getattr(o, name) for o in outs]
            return None if vals[0] is None else torch.cat(vals, dim=0)

        return CommitteeOutput(energy=cat("energy"), forces=cat("forces"), stress=cat("stress"))


def evaluate(
    model: CommitteeModel,
    graph: AtomicGraph,
    *,
    compute_stress: bool = False,
) -> CommitteeOutput:
    """Inference helper: energies, forces (and stress) detached from the autograd graph."""
    out = model.predict(graph, compute_forces=True, compute_stress=compute_stress)
    return CommitteeOutput(
        energy=out.energy.detach(),
        forces=None if out.forces is None else out.forces.detach(),
        stress=None if out.stress is None else out.stress.detach(),
    )
