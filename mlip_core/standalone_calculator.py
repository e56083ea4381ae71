"""ASE calculator for a pesflow committee exported with ``pesflow export --format torchscript``.

A single file that needs only ``torch``, ``ase`` and ``numpy`` (pesflow need not be installed;
``vesin``, when installed, builds the neighbor list ~50x faster than ASE).
Copy it next to the exported ``committee-float64.pt`` / ``committee-float32.pt`` and::

    from pesflow_calculator import PesflowCalculator
    atoms.calc = PesflowCalculator("committee-float64.pt")  # path relative to this file or cwd
    atoms.get_potential_energy(); atoms.get_forces(); atoms.calc.results["max_force_dev"]

Results (the names of pesflow's ``CommitteeCalculator``; units eV, Å):

- ``energy`` = ``free_energy`` (eV), ``forces`` (N, 3) eV/Å, ``stress`` (6,) Voigt eV/Å^3, ASE
  sign (only for a cell periodic in all three directions): the committee means;
- ``energy_committee`` (K,), ``forces_committee`` (K, N, 3), ``stress_committee`` (K, 6): the
  members;
- ``energy_std`` (eV): population std of the member energies;
- ``forces_std`` (N,): per-atom force deviation ``sigma_i = sqrt(mean_k |F_i^k - <F_i>|^2)``,
  eV/Å;
- ``max_force_dev`` (eV/Å): ``max_i sigma_i``, the frame's uncertainty (DP-GEN's
  ``max_devi_f``, also stored under that name);
- ``max_force_dev_rel``: ``max_i sigma_i / (|<F_i>| + relative_eps)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list

__all__ = ["PesflowCalculator", "load_model", "neighbor_pairs"]

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _full_box(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """``cell`` with every zero non-periodic vector replaced by a unit vector orthogonal to the
    others (vesin needs a full box; no image is ever taken along those directions)."""
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    zero = [ax for ax in range(3) if not pbc[ax] and np.linalg.norm(box[ax]) < 1e-9]
    if not zero:
        return box
    kept = np.array([box[ax] for ax in range(3) if ax not in zero]).reshape(-1, 3)
    complement = np.eye(3)
    if len(kept):
        complement = np.linalg.svd(kept)[2][np.linalg.matrix_rank(kept) :]
    for ax, vec in zip(zero, complement, strict=False):
        box[ax] = vec
    return box


def neighbor_pairs(
    atoms: Atoms, cutoff: float, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbor list within ``cutoff`` Å: ``(i, j, S, d)`` with integer cell shifts ``S``
    (``r_ij = x_j - x_i + S @ cell``) and distances ``d``, both directions of every pair.

    ``backend``: ``"ase"`` (:func:`ase.neighborlist.neighbor_list`), ``"vesin"`` (same pairs,
    ~50x faster; ``pip install vesin``) or ``"auto"`` (vesin when importable, else ASE).

    Raises:
        ImportError: ``backend="vesin"`` without vesin installed.
        ValueError: an unknown backend.
    """
    if backend not in ("auto", "ase", "vesin"):
        raise ValueError(f"unknown neighbor-list backend {backend!r} (auto, ase, vesin)")
    nl = None
    if backend != "ase":
        try:
            from vesin import NeighborList

            nl = NeighborList(cutoff=cutoff, full_list=True, sorted=True)
        except ImportError:
            if backend == "vesin":
                raise
    if nl is None:
        i, j, s, d = neighbor_list("ijSd", atoms, cutoff)
    else:
        pbc = np.asarray(atoms.pbc, dtype=bool)
        i, j, s, d = nl.compute(
            points=np.asarray(atoms.positions, dtype=np.float64),
            box=_full_box(atoms.cell.array, pbc),
            periodic=pbc,
            quantities="ijSd",
        )
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64), d.astype(np.float64)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of an exported committee; a relative ``path`` that does not exist
    from the working directory is looked up next to this file.

    Raises:
        FileNotFoundError: no such file in either place.
    """
    p = Path(path)
    if not p.is_file() and not p.is_absolute():
        p = Path(__file__).resolve().with_name(str(path))
    if not p.is_file():
        raise FileNotFoundError(f"no exported committee at {path}")
    with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        return torch.jit.load(str(p), map_location=device).eval()


class PesflowCalculator(Calculator):
    """ASE calculator of an exported pesflow committee (all members in one batched call).

    Args:
        model: path of an exported ``committee-*.pt`` (or an already loaded script module).
        device: torch device to run on.
        min_distance: refuse structures with two atoms closer than this, Å (0: no check);
            pesflow's default is 0.5 Å.
        relative_eps: regulariser of ``max_force_dev_rel``, eV/Å.
        neighbors: neighbor-list backend of :func:`neighbor_pairs` (``auto``, ``ase``,
            ``vesin``).

    Raises:
        ValueError: from :meth:`calculate`, for an element the model does not know, atoms
            closer than ``min_distance``, non-finite positions or no atoms.
        FloatingPointError: the committee produced non-finite energies or forces.
    """

    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "energy_committee",
        "forces_committee",
        "stress_committee",
        "energy_std",
        "forces_std",
        "max_force_dev",
        "max_force_dev_rel",
        "max_devi_f",
    ]

    def __init__(
        self,
        model: str | Path | torch.jit.ScriptModule = "committee-float64.pt",
        *,
        device: str | torch.device = "cpu",
        min_distance: float = 0.5,
        relative_eps: float = 1.0,
        neighbors: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if neighbors not in ("auto", "ase", "vesin"):
            raise ValueError(f"unknown neighbor-list backend {neighbors!r} (auto, ase, vesin)")
        self.neighbors = neighbors
        self.device = torch.device(device)
        if isinstance(model, str | Path):
            model = load_model(model, self.device)
        self.model = model
        self.cutoff = float(model.cutoff)
        self.species = [int(z) for z in model.species]
        self.n_members = int(model.n_members)
        self.min_distance = float(min_distance)
        self.relative_eps = float(relative_eps)

    def _check(self, atoms: Atoms) -> None:
        if len(atoms) == 0:
            raise ValueError("empty structure: it has no atoms")
        if not np.isfinite(atoms.positions).all():
            raise ValueError("positions are NaN or infinite")
        unknown = sorted(set(atoms.numbers.tolist()) - set(self.species))
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in sorted(self.species))
            raise ValueError(f"element(s) {names} not among the model's species ({known})")

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
        self._check(at)
        i, j, shifts, dist = neighbor_pairs(at, self.cutoff, self.neighbors)
        if self.min_distance > 0 and dist.size and dist.min() < self.min_distance:
            raise ValueError(
                f"atoms too close: {dist.min():.3f} Å < min_distance {self.min_distance} Å"
            )
        periodic = bool(np.all(at.pbc))
        out = self.model(
            torch.as_tensor(np.asarray(at.positions, dtype=np.float64)),
            torch.as_tensor(np.asarray(at.cell.array, dtype=np.float64)),
            torch.as_tensor(at.numbers.astype(np.int64)),
            torch.as_tensor(np.stack([i, j])),
            torch.as_tensor(shifts),
            periodic,
        )
        res = {k: v.detach().cpu().double().numpy() for k, v in out.items()}
        energies, forces = res["energy_committee"], res["forces_committee"]
        if not (np.isfinite(energies).all() and np.isfinite(forces).all()):
            raise FloatingPointError("committee produced non-finite energies or forces")
        mean_f = forces.mean(axis=0)
        sigma = res["forces_std"]
        results: dict[str, Any] = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "forces": mean_f,
            "energy_committee": energies,
            "forces_committee": forces,
            "energy_std": float(energies.std()),
            "forces_std": sigma,
            "max_force_dev": float(sigma.max()),
            "max_devi_f": float(sigma.max()),
            "max_force_dev_rel": float(
                (sigma / (np.linalg.norm(mean_f, axis=-1) + self.relative_eps)).max()
            ),
        }
        if periodic:
            members = np.stack([[s[a, b] for a, b in _VOIGT] for s in res["stress_committee"]])
            results["stress_committee"] = members
            results["stress"] = members.mean(axis=0)
        self.results = results
