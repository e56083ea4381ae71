"""Labelled structures: the REF_* keys, batched label tensors, and a committee's errors on them.

Training data are ASE ``Atoms`` carrying reference labels under the extended-XYZ keys
``info["REF_energy"]`` (eV), ``arrays["REF_forces"]`` (eV/Å, shape (N, 3)) and optionally
``info["REF_stress"]`` (Voigt, eV/Å^3), the same keys pesflow exports. The public names here
are also importable from :mod:`mlip_core.training`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms, units
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from mlip_core.model import CommitteePotential
from mlip_core.neighbors import AtomicGraph, build_graph, concat_graphs
from mlip_core.uncertainty import max_force_deviation
from structure_checks.vocabulary import REF_ENERGY, REF_FORCES, REF_STRESS

if TYPE_CHECKING:
    from mlip_core.training import TrainingConfig

__all__ = [
    "REF_ENERGY",
    "REF_FORCES",
    "REF_STRESS",
    "Batch",
    "FramePredictions",
    "LabelledData",
    "attach_labels",
    "error_metrics",
    "errors_by_regime",
    "evaluate_errors",
    "evaluate_predictions",
    "fit_reference_energies",
    "predict_frames",
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
    stress: torch.Tensor | None  # (B, 3, 3) eV/Å^3 (zeros where unlabelled), None if no label
    weights: torch.Tensor  # (K, B) per-member structure weights
    stress_mask: torch.Tensor | None = None  # (B,) True where a periodic stress label exists


class LabelledData:
    """Prebuilt graphs and label tensors of a list of labelled structures."""

    def __init__(self, structures: Sequence[Atoms], model: CommitteePotential, dtype: torch.dtype):
        self.graphs = [
            build_graph(at, model.cutoff, model.species_index, dtype=dtype) for at in structures
        ]
        labels = [read_labels(at, i) for i, at in enumerate(structures)]
        self.energy = [torch.tensor(e, dtype=torch.float64) for e, _, _ in labels]
        self.forces = [torch.as_tensor(f, dtype=dtype) for _, f, _ in labels]
        # a stress label counts only on a cell with a volume (a molecule's has no meaning)
        self.stress = [
            None
            if s is None or not bool((g.volume > 0).all())
            else torch.as_tensor(voigt_6_to_full_3x3_stress(s), dtype=dtype)
            for (_, _, s), g in zip(labels, self.graphs, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.graphs)

    def has_stress(self, i: int) -> bool:
        """Whether structure ``i`` has a usable stress label (periodic, labelled)."""
        return self.stress[i] is not None

    def batch(self, idx: Sequence[int], weights: torch.Tensor) -> Batch:
        """The structures ``idx`` as one :class:`Batch`; ``weights`` is (K, len(idx)).
        Structures without a stress label get zeros and ``stress_mask`` False."""
        stresses = [self.stress[i] for i in idx]
        known = [s for s in stresses if s is not None]
        stress = mask = None
        if known:
            zero = torch.zeros_like(known[0])
            stress = torch.stack([zero if s is None else s for s in stresses])
            mask = torch.tensor([s is not None for s in stresses])
        return Batch(
            graph=concat_graphs([self.graphs[i] for i in idx]),
            energy=torch.stack([self.energy[i] for i in idx]),
            forces=torch.cat([self.forces[i] for i in idx]),
            stress=stress,
            weights=weights,
            stress_mask=mask,
        )


def _stress_graph(g: AtomicGraph, mask: torch.Tensor) -> AtomicGraph:
    """``g`` with volume 1 Å^3 where ``mask`` is False and the cell has none, so a batch that
    mixes molecules with stress-labelled cells can be differentiated for the stress (the
    stress of the masked structures is computed but never used)."""
    if bool((g.volume > 0).all()):
        return g
    vol = torch.where(
        mask.to(g.volume.device) | (g.volume > 0), g.volume, torch.ones_like(g.volume)
    )
    return dataclasses.replace(g, volume=vol)


def weighted_losses(
    model: CommitteePotential, batch: Batch, cfg: TrainingConfig, create_graph: bool
) -> torch.Tensor:
    """Per-member weighted force-matching loss, shape (K,) (see :mod:`mlip_core.training`).
    The stress term counts only the structures with a stress label (``batch.stress_mask``):
    a batch may mix bulk cells, slabs and molecules."""
    g = batch.graph
    mask = batch.stress_mask
    use_stress = cfg.stress_weight > 0 and batch.stress is not None and mask is not None
    if use_stress:
        g = _stress_graph(g, mask)  # type: ignore[arg-type]
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
        s_term = (s_err**2).mean((-1, -2)) * mask.to(s_err.dtype).unsqueeze(0)  # type: ignore[union-attr]
        per_struct = per_struct + cfg.stress_weight * s_term.to(e_err.dtype)
    w = batch.weights.to(per_struct.dtype)
    return (w * per_struct).sum(1) / w.sum(1).clamp_min(1e-12)


@dataclass
class FramePredictions:
    """Committee-mean predictions and reference labels, structure by structure.

    Attributes:
        n_atoms: ``(B,)`` atoms per structure.
        energy_pred, energy_ref: ``(B,)`` energies per atom, eV/atom (committee mean, label).
        forces_pred, forces_ref: B arrays ``(N_b, 3)``, eV/Å.
        stress_pred, stress_ref: ``(B, 6)`` Voigt stress, eV/Å^3; NaN rows where the structure
            has no stress label (non-periodic, or a labeler that gives none).
        member_energy: ``(K, B)`` each member's energy per atom, eV/atom.
        member_force_sq: ``(K, B)`` each member's sum of squared force-component errors, (eV/Å)^2.
        max_devi_f: ``(B,)`` max over atoms of the committee force deviation, eV/Å
            (:func:`mlip_core.uncertainty.atomic_force_deviation`; 0 for one member), or
            of the model's own per-atom uncertainty when it reports one (a GAP's sd, eV).
    """

    n_atoms: np.ndarray
    energy_pred: np.ndarray
    energy_ref: np.ndarray
    forces_pred: list[np.ndarray]
    forces_ref: list[np.ndarray]
    stress_pred: np.ndarray
    stress_ref: np.ndarray
    member_energy: np.ndarray
    member_force_sq: np.ndarray
    max_devi_f: np.ndarray

    def __len__(self) -> int:
        return len(self.n_atoms)

    def max_force_errors(self) -> np.ndarray:
        """``(B,)`` max over atoms of ``|F_mean - F_ref|``, eV/Å (the error a calibrated
        deviation stands for)."""
        return np.array(
            [
                float(np.linalg.norm(p - r, axis=1).max())
                for p, r in zip(self.forces_pred, self.forces_ref, strict=True)
            ]
        )


def predict_frames(
    model: CommitteePotential, structures: Sequence[Atoms], batch_size: int = 8
) -> FramePredictions:
    """Evaluate the committee on labelled structures (:class:`FramePredictions`); the stress
    is predicted only for the structures with a stress label, in batches of their own.

    Raises:
        ValueError: no structures, or a structure without finite labels.
    """
    if not structures:
        raise ValueError("no structures to evaluate")
    data = LabelledData(structures, model, model.dtype)
    n, k = len(structures), model.n_members
    e_pred, e_ref, nat = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    s_pred, s_ref = np.full((n, 6), np.nan), np.full((n, 6), np.nan)
    m_energy, m_fsq, devi = np.zeros((k, n)), np.zeros((k, n)), np.zeros(n)
    f_pred: list[np.ndarray] = [np.zeros((0, 3))] * n
    f_ref: list[np.ndarray] = [np.zeros((0, 3))] * n
    with_stress = [i for i in range(n) if data.has_stress(i)]
    groups = (with_stress, [i for i in range(n) if not data.has_stress(i)])
    for group, stress in zip(groups, (True, False), strict=True):
        for start in range(0, len(group), batch_size):
            idx = group[start : start + batch_size]
            b = data.batch(idx, torch.ones(k, len(idx)))
            out = model.predict(b.graph, compute_forces=True, compute_stress=stress)
            forces = out.forces.detach().double()  # type: ignore[union-attr]
            counts = b.graph.n_atoms.tolist()
            per_atom = out.energy.detach().double() / b.graph.n_atoms.double()
            for j, (i, part, ref) in enumerate(
                zip(idx, forces.split(counts, dim=1), b.forces.double().split(counts), strict=True)
            ):
                nat[i] = counts[j]
                e_ref[i] = float(b.energy[j]) / counts[j]
                m_energy[:, i] = per_atom[:, j].numpy()
                e_pred[i] = float(per_atom[:, j].mean())
                f_pred[i] = part.mean(0).numpy()
                f_ref[i] = ref.numpy()
                m_fsq[:, i] = ((part - ref) ** 2).sum((1, 2)).numpy()
                if out.uncertainty is not None:  # the model's own per-atom uncertainty
                    devi[i] = float(out.uncertainty[b.graph.batch == j].max())
                elif k > 1:  # the one definition of max_devi_f (mlip_core.uncertainty)
                    devi[i] = max_force_deviation(part.numpy())
                if stress and out.stress is not None:
                    mean = out.stress.detach().double().mean(0)[j].numpy()
                    s_pred[i] = full_3x3_to_voigt_6_stress(mean)
                    s_ref[i] = full_3x3_to_voigt_6_stress(b.stress[j].double().numpy())  # type: ignore[index]
    return FramePredictions(nat, e_pred, e_ref, f_pred, f_ref, s_pred, s_ref, m_energy, m_fsq, devi)


def error_metrics(pred: FramePredictions, idx: Sequence[int] | None = None) -> dict[str, float]:
    """Errors of the committee mean over the structures ``idx`` (default all).

    Returns ``force_rmse``, ``force_mae``, ``force_max`` (over Cartesian components, eV/Å),
    ``energy_rmse``, ``energy_mae``, ``energy_max`` (per atom, eV/atom), ``n_frames``, and
    ``stress_rmse_gpa`` (over Voigt components, GPa) with ``n_stress`` when any of them has a
    stress label. Max is the largest absolute error, so one bad frame shows.

    Raises:
        ValueError: ``idx`` is empty.
    """
    idx = list(range(len(pred))) if idx is None else list(idx)
    if not idx:
        raise ValueError("no structures to compute errors over")
    df = np.concatenate([(pred.forces_pred[i] - pred.forces_ref[i]).reshape(-1) for i in idx])
    de = pred.energy_pred[idx] - pred.energy_ref[idx]
    out = {
        "force_rmse": float(np.sqrt(np.mean(df**2))) if df.size else 0.0,
        "force_mae": float(np.mean(np.abs(df))) if df.size else 0.0,
        "force_max": float(np.max(np.abs(df))) if df.size else 0.0,
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "energy_mae": float(np.mean(np.abs(de))),
        "energy_max": float(np.max(np.abs(de))),
        "n_frames": len(idx),
    }
    ds = pred.stress_pred[idx] - pred.stress_ref[idx]
    rows = ~np.isnan(ds).any(1)
    if rows.any():
        out["stress_rmse_gpa"] = float(np.sqrt(np.mean(ds[rows] ** 2)) / units.GPa)
        out["n_stress"] = int(rows.sum())
    return out


def errors_by_regime(pred: FramePredictions, regimes: Sequence[str]) -> dict[str, dict[str, float]]:
    """:func:`error_metrics` per regime: ``{regime: metrics}`` with ``regimes[b]`` the regime
    of structure ``b`` (names in order of first appearance).

    Raises:
        ValueError: ``regimes`` does not give one name per structure.
    """
    if len(regimes) != len(pred):
        raise ValueError(f"got {len(regimes)} regime names for {len(pred)} structures")
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(regimes):
        groups.setdefault(str(name), []).append(i)
    return {name: error_metrics(pred, idx) for name, idx in groups.items()}


def evaluate_errors(
    model: CommitteePotential, structures: Sequence[Atoms], batch_size: int = 8
) -> dict[str, float]:
    """Errors of the committee mean (and each member) on labelled structures
    (:func:`evaluate_predictions` of :func:`predict_frames`).

    Raises:
        ValueError: no structures, or a structure without finite labels.
    """
    return evaluate_predictions(predict_frames(model, structures, batch_size))


def evaluate_predictions(pred: FramePredictions) -> dict[str, float]:
    """:func:`error_metrics` of the committee mean (force RMSE/MAE/max over Cartesian
    components in eV/Å, energy RMSE/MAE/max per atom in eV/atom, stress RMSE in GPa where
    labelled) plus each member's ``member{k}_force_rmse`` and ``member{k}_energy_rmse``."""
    metrics: dict[str, float] = error_metrics(pred)
    n_comp = 3 * float(pred.n_atoms.sum())
    de = pred.member_energy - pred.energy_ref[None, :]
    for k in range(pred.member_energy.shape[0]):
        metrics[f"member{k}_force_rmse"] = float(np.sqrt(pred.member_force_sq[k].sum() / n_comp))
        metrics[f"member{k}_energy_rmse"] = float(np.sqrt(np.mean(de[k] ** 2)))
    return metrics
