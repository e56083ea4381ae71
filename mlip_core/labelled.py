"""Labelled structures: the REF_* keys, batched label tensors, and a committee's errors on them.

Training data are ASE ``Atoms`` carrying reference labels under the extended-XYZ keys
``info["REF_energy"]`` (eV), ``arrays["REF_forces"]`` (eV/Å, shape (N, 3)) and optionally
``info["REF_stress"]`` (Voigt, eV/Å^3), the same keys pesflow exports. The public names here
are also importable from :mod:`mlip_core.training`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from mlip_core.model import CommitteePotential
from mlip_core.neighbors import AtomicGraph, build_graph, concat_graphs
from structure_checks.vocabulary import REF_ENERGY, REF_FORCES, REF_STRESS

if TYPE_CHECKING:
    from mlip_core.training import TrainingConfig

__all__ = [
    "REF_ENERGY",
    "REF_FORCES",
    "REF_STRESS",
    "Batch",
    "LabelledData",
    "attach_labels",
    "evaluate_errors",
    "fit_reference_energies",
    "read_labels",
    "weighted_losses",
]

log = logging.getLogger(__name__)


def attach_labels(
    atoms: Atoms,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray | None = None,
) -> Atoms:
    """Copy of ``atoms`` carrying reference labels under the REF_* keys (no calculator).

    Args:
        atoms: the structure (N atoms).
        energy: total energy, eV.
        forces: (N, 3) forces, eV/Å.
        stress: optional stress, 6 Voigt components or (3, 3), eV/Å^3.

    Raises:
        ValueError: ``forces`` is not (N, 3).
    """
    out = atoms.copy()
    out.calc = None
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"forces must have shape ({len(atoms)}, 3), got {forces.shape}")
    out.info[REF_ENERGY] = float(energy)
    out.arrays[REF_FORCES] = forces.copy()
    if stress is not None:
        out.info[REF_STRESS] = np.asarray(stress, dtype=float).reshape(6).copy()
    return out


def read_labels(atoms: Atoms, i: int) -> tuple[float, np.ndarray, np.ndarray | None]:
    """``(energy eV, forces (N, 3) eV/Å, Voigt stress (6,) eV/Å^3 or None)`` of structure ``i``.

    Raises:
        ValueError: labels missing or non-finite (the message names structure ``i``).
    """
    if REF_ENERGY not in atoms.info or REF_FORCES not in atoms.arrays:
        raise ValueError(
            f"training structure {i} has no reference labels "
            f"(info['{REF_ENERGY}'] and arrays['{REF_FORCES}'] are required)"
        )
    e = float(atoms.info[REF_ENERGY])
    f = np.asarray(atoms.arrays[REF_FORCES], dtype=float)
    s = atoms.info.get(REF_STRESS)
    if not math.isfinite(e) or not np.isfinite(f).all():
        raise ValueError(f"training structure {i} has non-finite reference energy or forces")
    return e, f, None if s is None else np.asarray(s, dtype=float)


def composition_fit(structures: Sequence[Atoms], species: Sequence[int]) -> tuple[np.ndarray, int]:
    """Least squares ``E_b ~ sum_z n_bz e_z`` over the structures' ``REF_energy``: the
    minimum-norm per-element energies ``(len(species),)`` in eV, in the order of ``species``,
    and the rank of the composition matrix (below ``len(species)``: not all determined)."""
    index = {z: i for i, z in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    energies = np.zeros(len(structures))
    for b, at in enumerate(structures):
        for z in at.numbers:
            counts[b, index[int(z)]] += 1
        energies[b] = read_labels(at, b)[0]
    sol, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    return sol, int(rank)


def fit_reference_energies(structures: Sequence[Atoms], species: Sequence[int]) -> np.ndarray:
    """Per-element reference energies by least squares (:func:`composition_fit`).

    Returns:
        ``(len(species),)`` energies in eV, in the order of ``species`` (the minimum-norm
        solution; a warning is logged when the composition matrix has rank below
        ``len(species)``, e.g. every structure with the same Ni:Co ratio, or a species
        without atoms).
    """
    sol, rank = composition_fit(structures, species)
    if rank < len(species):
        present = {int(z) for at in structures for z in at.numbers}
        absent = [chemical_symbols[z] for z in species if z not in present]
        log.warning(
            "reference energies: the compositions of %d structures determine %d of %d "
            "per-element energies%s; energies at other compositions are extrapolated",
            len(structures),
            rank,
            len(species),
            f" (no atoms of {', '.join(absent)})" if absent else "",
        )
    return sol


@dataclass
class Batch:
    """B structures (N atoms in all) as one graph plus their labels, for K members."""

    graph: AtomicGraph
    energy: torch.Tensor  # (B,) eV, float64
    forces: torch.Tensor  # (N, 3) eV/Å
    stress: torch.Tensor | None  # (B, 3, 3) eV/Å^3, None unless every structure has one
    weights: torch.Tensor  # (K, B) per-member structure weights


class LabelledData:
    """Prebuilt graphs and label tensors of a list of labelled structures."""

    def __init__(self, structures: Sequence[Atoms], model: CommitteePotential, dtype: torch.dtype):
        self.graphs = [
            build_graph(at, model.cutoff, model.species_index, dtype=dtype) for at in structures
        ]
        labels = [read_labels(at, i) for i, at in enumerate(structures)]
        self.energy = [torch.tensor(e, dtype=torch.float64) for e, _, _ in labels]
        self.forces = [torch.as_tensor(f, dtype=dtype) for _, f, _ in labels]
        self.stress = [
            None if s is None else torch.as_tensor(voigt_6_to_full_3x3_stress(s), dtype=dtype)
            for _, _, s in labels
        ]

    def __len__(self) -> int:
        return len(self.graphs)

    def batch(self, idx: Sequence[int], weights: torch.Tensor) -> Batch:
        """The structures ``idx`` as one :class:`Batch`; ``weights`` is (K, len(idx))."""
        stresses = [self.stress[i] for i in idx]
        return Batch(
            graph=concat_graphs([self.graphs[i] for i in idx]),
            energy=torch.stack([self.energy[i] for i in idx]),
            forces=torch.cat([self.forces[i] for i in idx]),
            stress=None if any(s is None for s in stresses) else torch.stack(stresses),  # type: ignore[misc]
            weights=weights,
        )


def weighted_losses(
    model: CommitteePotential, batch: Batch, cfg: TrainingConfig, create_graph: bool
) -> torch.Tensor:
    """Per-member weighted force-matching loss, shape (K,) (see :mod:`mlip_core.training`)."""
    g = batch.graph
    use_stress = cfg.stress_weight > 0 and batch.stress is not None and bool((g.volume > 0).all())
    out = model.predict(
        g, compute_forces=True, compute_stress=use_stress, create_graph=create_graph
    )
    n_atoms = g.n_atoms.to(out.energy.dtype)
    e_err = (out.energy - batch.energy.unsqueeze(0)) / n_atoms  # (K, B) eV/atom
    f_sq = ((out.forces - batch.forces.unsqueeze(0)) ** 2).sum(-1)  # type: ignore[operator]
    k = out.energy.shape[0]
    f_struct = torch.zeros(k, g.n_structures, dtype=f_sq.dtype).index_add(1, g.batch, f_sq)
    f_struct = f_struct / n_atoms.to(f_sq.dtype)  # mean over atoms of |dF|^2
    per_struct = cfg.energy_weight * e_err**2 + cfg.force_weight * f_struct.to(e_err.dtype)
    if use_stress:
        vol_per_atom = (g.volume / n_atoms.to(g.volume.dtype)).view(1, -1, 1, 1)
        s_err = (out.stress - batch.stress.unsqueeze(0)) * vol_per_atom  # type: ignore[operator,union-attr]
        per_struct = per_struct + cfg.stress_weight * (s_err**2).mean((-1, -2)).to(e_err.dtype)
    w = batch.weights.to(per_struct.dtype)
    return (w * per_struct).sum(1) / w.sum(1).clamp_min(1e-12)


def evaluate_errors(
    model: CommitteePotential, structures: Sequence[Atoms], batch_size: int = 8
) -> dict[str, float]:
    """Errors of the committee mean (and each member) on labelled structures.

    Returns force RMSE/MAE over Cartesian components (eV/Å), energy RMSE/MAE per atom (eV/atom),
    for the committee mean (``force_rmse``, ...) and per member (``member{k}_force_rmse``).

    Raises:
        ValueError: no structures, or a structure without finite labels.
    """
    if not structures:
        raise ValueError("no structures to evaluate")
    data = LabelledData(structures, model, model.dtype)
    f_err_mean, f_err_members, e_err_mean, e_err_members = [], [], [], []
    for start in range(0, len(structures), batch_size):
        idx = list(range(start, min(start + batch_size, len(structures))))
        b = data.batch(idx, torch.ones(model.n_members, len(idx)))
        out = model.predict(b.graph, compute_forces=True)
        forces = out.forces.detach().double()  # type: ignore[union-attr]
        ref_f = b.forces.double()
        f_err_members.append((forces - ref_f).reshape(model.n_members, -1))
        f_err_mean.append((forces.mean(0) - ref_f).reshape(-1))
        n = b.graph.n_atoms.double()
        e = out.energy.detach()
        e_err_members.append((e - b.energy) / n)
        e_err_mean.append((e.mean(0) - b.energy) / n)
    fm = torch.cat(f_err_mean)
    fk = torch.cat(f_err_members, dim=1)
    em = torch.cat(e_err_mean)
    ek = torch.cat(e_err_members, dim=1)
    metrics = {
        "force_rmse": float(fm.pow(2).mean().sqrt()),
        "force_mae": float(fm.abs().mean()),
        "energy_rmse": float(em.pow(2).mean().sqrt()),
        "energy_mae": float(em.abs().mean()),
    }
    for k in range(model.n_members):
        metrics[f"member{k}_force_rmse"] = float(fk[k].pow(2).mean().sqrt())
        metrics[f"member{k}_energy_rmse"] = float(ek[k].pow(2).mean().sqrt())
    return metrics
