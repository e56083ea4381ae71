"""The native committee as a TorchScript module that runs with torch alone (no pesflow).

:func:`script_committee` compiles a :class:`~mlip_core.model.CommitteePotential` (bare or in a
:class:`~mlip_core.repulsion.WithRepulsion`) into a :class:`StandaloneCommittee`;
:func:`save_scripted` writes it for ``torch.jit.load`` (Python with torch, or libtorch in C++).
The ASE calculator shipped with it is :mod:`mlip_core.standalone_calculator`.

Why TorchScript: forces need ``torch.autograd.grad`` inside ``forward``; ``torch.jit.script``
compiles that with dynamic atom and edge counts (how MACE and NequIP deploy), while
``torch.export`` (torch 2.13) refuses such a forward ("fake tensor in the exported program
constant's list"). torch 2.13 marks ``torch.jit`` deprecated (a warning, silenced here and in
the calculator) but runs it.

Physics is :meth:`CommitteePotential.predict`'s own code: the module calls the functions of
:mod:`mlip_core.functional` that ``predict`` calls (the model's single definition, compiled
here), on a copy of the model's own embedding, interaction layers and readout (same parameter
names, no gradients). Only the input differs: the caller's edge list ``(i, j, S)`` (``r_ij =
x_j - x_i + S @ cell``) is packed into the padded ``(N, M)`` layout by :func:`dense_layout`.
The ZBL baseline (float64, analytic) is added to every member as in
:class:`~mlip_core.repulsion.WithRepulsion`. Tests: equal to
:class:`~mlip_core.calculator.CommitteeCalculator` to 1e-10 (float64) and 1e-5 (float32).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mlip_core.functional import (
    CommitteeWeights,
    LayerWeights,
    edge_features,
    edge_forces,
    edge_gradient,
    edge_stress,
    edge_vectors,
    energies_and_edge_gradients,
    zbl_edges,
)
from mlip_core.repulsion import ZBL_CONSTANTS

__all__ = [
    "FORMAT_VERSION",
    "StandaloneCommittee",
    "dense_layout",
    "save_scripted",
    "script_committee",
]

FORMAT_VERSION = 1
"""Version of the scripted module's interface (inputs, output keys) written into its metadata."""
METADATA_FILE = "pesflow.json"
"""Name of the JSON metadata stored inside the TorchScript archive (``_extra_files``)."""


def dense_layout(
    i: Tensor, j: Tensor, shifts: Tensor, n_atoms: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pack an edge list into the dense ``(N, M)`` layout of :mod:`mlip_core.neighbors`.

    Args:
        i, j: ``(E,)`` int64 edge ends (any order).
        shifts: ``(E, 3)`` Cartesian shift of each edge, Å.
        n_atoms: N.

    Returns:
        ``neighbors (N, M)`` (padding slots point at the atom itself), ``shifts (N, M, 3)``
        (0 on padding), ``mask (N, M)`` (True for real edges); ``M = max(1, most edges of an
        atom)``.
    """
    n_edges = i.shape[0]
    order = torch.sort(i, stable=True)[1]
    i_s, j_s, sh = i[order], j[order], shifts[order]
    counts = torch.bincount(i_s, minlength=n_atoms)
    width = max(int(counts.max()), 1)
    slot = torch.arange(n_edges, device=i.device) - (torch.cumsum(counts, 0) - counts)[i_s]
    neighbors = torch.arange(n_atoms, device=i.device).unsqueeze(1).repeat(1, width)
    neighbors = neighbors.index_put((i_s, slot), j_s)
    dense = torch.zeros(n_atoms, width, 3, dtype=shifts.dtype, device=shifts.device)
    dense = dense.index_put((i_s, slot), sh)
    mask = torch.zeros(n_atoms, width, dtype=torch.bool, device=i.device)
    mask = mask.index_put((i_s, slot), torch.ones_like(i_s, dtype=torch.bool))
    return neighbors, dense, mask


class StandaloneCommittee(nn.Module):
    """Scriptable stacked committee: K member energies, forces, stress and force deviation.

    Built by :func:`script_committee` from a native committee: a copy of its embedding,
    interaction layers and readout (their ``weights()`` compile; no gradients on the weights),
    its buffers, and the ZBL tables.

    Attributes:
        cutoff: cutoff radius, Å (the caller's edge list must contain every pair closer).
        species: atomic numbers the model knows.
        n_members: committee size K.
        has_repulsion: whether the ZBL baseline is included.
        dtype_name: ``"float32"`` or ``"float64"``, the precision of the learned part.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        from mlip_core.model import CommitteePotential
        from mlip_core.repulsion import unwrap

        learned, rep = unwrap(model)
        if not isinstance(learned, CommitteePotential):
            raise TypeError(
                f"only the native committee (CommitteePotential) can be scripted, got "
                f"{type(learned).__name__}"
            )
        cfg = learned.config
        own = copy.deepcopy(learned).requires_grad_(False)  # gradients w.r.t. edges only
        self.cutoff: float = float(cfg.cutoff)
        self.species: list[int] = [int(z) for z in cfg.species]
        self.n_members: int = int(cfg.n_members)
        self.dtype_name: str = str(learned.dtype).removeprefix("torch.")
        self.format_version: int = FORMAT_VERSION
        self.p: int = int(cfg.envelope_p)
        lut = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        for idx, z in enumerate(self.species):
            lut[z] = idx
        self.register_buffer("z_to_species", lut)
        # the model's own parameters and modules (same names as in its state dict); their
        # weights() methods compile with the rest
        self.embedding = own.embedding
        self.layers = own.layers
        self.readout = own.readout
        for name in ("bessel_freq", "energy_scale", "reference_energies"):
            self.register_buffer(name, own.get_buffer(name))
        self.has_repulsion: bool = rep is not None
        for name in ("z", "r_in", "r_out"):  # per species (pair) tables, species-index order
            table = torch.zeros(0) if rep is None else getattr(rep, name).detach().clone()
            self.register_buffer(f"zbl_{name}", table.double())
        self.zbl_constants: list[float] = list(ZBL_CONSTANTS)

    def _weights(self) -> CommitteeWeights:
        """:meth:`CommitteePotential.weights` (whose properties do not compile)."""
        layers: list[LayerWeights] = []
        for layer in self.layers:
            layers.append(layer.weights())
        return CommitteeWeights(self.embedding, layers, self.readout.weights(), self.energy_scale)

    # --- entry point --------------------------------------------------------------------
    def forward(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
        compute_stress: bool,
    ) -> dict[str, torch.Tensor]:
        """Committee energies, forces, stress and force deviation of one structure.

        Call with autograd allowed (not under ``torch.inference_mode``); ``torch.no_grad`` is
        fine, gradients are switched on inside and the previous mode restored.

        Args:
            positions: ``(N, 3)`` Cartesian positions, Å.
            cell: ``(3, 3)`` cell, Å, rows are lattice vectors (zeros for a molecule).
            numbers: ``(N,)`` atomic numbers (int64).
            edge_index: ``(2, E)`` int64 ``[i, j]`` of every directed pair closer than
                :attr:`cutoff` (both i->j and j->i, periodic images included, no self pair).
            shifts: ``(E, 3)`` integer cell shifts ``S``: ``r_ij = x_j - x_i + S @ cell``.
            compute_stress: also return the stress (needs a cell of positive volume).

        Returns:
            float64 tensors: ``energy`` () eV (committee mean), ``energy_committee`` (K,),
            ``forces`` (N, 3) eV/Å (mean), ``forces_committee`` (K, N, 3), ``forces_std``
            (N,) eV/Å (per-atom deviation ``sqrt(mean_k |F_i^k - <F_i>|^2)``),
            ``max_force_dev`` () eV/Å (its max over atoms, DP-GEN ``max_devi_f``); with
            ``compute_stress``: ``stress`` (3, 3) eV/Å^3 (mean, ASE sign: (1/V) dE/d strain)
            and ``stress_committee`` (K, 3, 3).

        Raises:
            torch.jit.Error (a RuntimeError) from scripted code, ValueError from Python:
            no atoms, an element the model does not know, or stress of a cell without volume.
        """
        dev = self.embedding.device
        if positions.shape[0] == 0:
            raise ValueError("cannot evaluate a structure with no atoms")
        numbers = numbers.to(device=dev, dtype=torch.long)
        if bool((numbers < 0).any()) or bool((numbers >= self.z_to_species.shape[0]).any()):
            raise ValueError("an atomic number is not among the model's species")
        species = self.z_to_species[numbers]
        if bool((species < 0).any()):
            raise ValueError("an atomic number is not among the model's species")
        box = cell.detach().to(device=dev, dtype=torch.float64)
        if compute_stress and not bool(torch.abs(torch.linalg.det(box)) > 0):
            raise ValueError("stress requested for a structure without a cell volume")
        prev = torch.is_grad_enabled()  # checks done: nothing below raises on valid input
        torch.set_grad_enabled(True)
        out = self._evaluate(positions, box, species, edge_index, shifts, compute_stress)
        torch.set_grad_enabled(prev)
        return out

    def _evaluate(
        self,
        positions: Tensor,
        box: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        compute_stress: bool,
    ) -> dict[str, Tensor]:
        dev, dtype, f64 = self.embedding.device, self.embedding.dtype, torch.float64
        k, n = self.n_members, positions.shape[0]
        cart = torch.matmul(shifts.detach().to(device=dev, dtype=f64), box)  # S @ cell
        neighbors, dense_shifts, mask = dense_layout(
            edge_index[0].to(dev), edge_index[1].to(dev), cart.to(dtype), n
        )
        pos = positions.detach().to(device=dev, dtype=dtype)
        # from here on CommitteePotential.predict for one structure (batch of zeros)
        vectors = edge_vectors(pos, neighbors, dense_shifts)
        basis, ylm, dbasis_dd, unit = edge_features(
            vectors, mask, self.bessel_freq, self.cutoff, self.p, True
        )
        e_atoms, g_basis, g_ylm = energies_and_edge_gradients(
            species, neighbors, basis, ylm, self._weights(), True, False
        )
        assert dbasis_dd is not None and unit is not None
        assert g_basis is not None and g_ylm is not None
        batch = torch.zeros(n, dtype=torch.long, device=dev)
        learned = torch.zeros(k, 1, dtype=dtype, device=dev).index_add(1, batch, e_atoms.detach())
        de_dr = edge_gradient(vectors, mask, g_basis, dbasis_dd, g_ylm, unit)
        forces_k = edge_forces(de_dr, neighbors)
        ref = torch.zeros(1, dtype=f64, device=dev).index_add(
            0, batch, self.reference_energies[species]
        )
        energies = (learned.to(f64) + ref.unsqueeze(0))[:, 0]
        vol = torch.abs(torch.linalg.det(box)).to(dtype).reshape(1)
        stress_k = torch.zeros(k, 3, 3, dtype=dtype, device=dev)
        if compute_stress:
            stress_k = edge_stress(vectors, de_dr, batch, 1, vol)[:, 0]
        if self.has_repulsion:  # ZBLRepulsion.predict, added as in WithRepulsion.predict
            vec64 = edge_vectors(pos.to(f64), neighbors, dense_shifts.to(f64))
            tables = [self.zbl_z, self.zbl_r_in, self.zbl_r_out]
            e_edge, de64 = zbl_edges(species, neighbors, mask, vec64, tables, self.zbl_constants)
            energies = energies + torch.zeros(1, dtype=f64, device=dev).index_add(
                0, batch, e_edge.sum(1)
            )
            forces_k = forces_k + edge_forces(de64.unsqueeze(0), neighbors).to(dtype)
            if compute_stress:
                s_rep = edge_stress(vec64, de64.unsqueeze(0), batch, 1, vol.to(f64))
                stress_k = stress_k + s_rep[:, 0].to(dtype)
        forces = forces_k.to(f64)
        mean_f = forces.mean(0)
        sigma = ((forces - mean_f) ** 2).sum(-1).mean(0).sqrt()
        out: dict[str, Tensor] = {
            "energy": energies.mean(),
            "energy_committee": energies,
            "forces": mean_f,
            "forces_committee": forces,
            "forces_std": sigma,
            "max_force_dev": sigma.max(),
        }
        if compute_stress:
            out["stress_committee"] = stress_k.to(f64)
            out["stress"] = stress_k.to(f64).mean(0)
        return out


def script_committee(model: Any, dtype: torch.dtype | None = None) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of :class:`StandaloneCommittee` of ``model``, on CPU.

    Args:
        model: a :class:`~mlip_core.model.CommitteePotential`, bare or in a
            :class:`~mlip_core.repulsion.WithRepulsion`.
        dtype: precision of the learned part (default: the model's); the reference energies
            and the ZBL baseline stay float64.

    Raises:
        TypeError: another backend (e.g. MACE) than the native committee.
    """
    m = copy.deepcopy(model).cpu()
    if dtype is not None:
        m = m.to(dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
        warnings.filterwarnings("ignore", message="The TorchScript type system")
        return torch.jit.script(StandaloneCommittee(m).eval())


def save_scripted(
    scripted: torch.jit.ScriptModule, path: str | Path, metadata: dict[str, Any] | None = None
) -> str:
    """Write a scripted committee with ``metadata`` (JSON, stored as :data:`METADATA_FILE`
    inside the archive: species, cutoff, members, dtype, plus the caller's provenance) and
    return the file's sha256."""
    meta = {
        "format": "pesflow-torchscript",
        "format_version": FORMAT_VERSION,
        "species": list(scripted.species),
        "cutoff": float(scripted.cutoff),
        "n_members": int(scripted.n_members),
        "dtype": str(scripted.dtype_name),
        "has_repulsion": bool(scripted.has_repulsion),
        "torch": str(torch.__version__),
        **(metadata or {}),
    }
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.save` is deprecated", DeprecationWarning)
        torch.jit.save(
            scripted, buf, _extra_files={METADATA_FILE: json.dumps(meta, sort_keys=True)}
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getbuffer())
    return hashlib.sha256(buf.getbuffer()).hexdigest()
