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

Physics is :meth:`CommitteePotential.predict`'s, step for step (:mod:`mlip_core.standalone_ops`):
the caller's edge list ``(i, j, S)`` (``r_ij = x_j - x_i + S @ cell``) is packed into the
padded ``(N, M)`` layout inside the module; the edge geometry is shared by the K members; one
backward pass gives every member's ``dE_k/d(edge features)``, which the analytic edge Jacobian
turns into forces and the virial stress. The ZBL baseline (float64, analytic) is added to every
member as in :class:`~mlip_core.repulsion.WithRepulsion`. Tests: equal to
:class:`~mlip_core.calculator.CommitteeCalculator` to 1e-10 (float64) and 1e-5 (float32).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mlip_core.layers import _L_SLICES, ylm_vector_jacobian_product
from mlip_core.repulsion import COULOMB, PHI_B, PHI_C, SCREENING
from mlip_core.standalone_ops import (
    dense_layout,
    edge_features,
    invariant_update,
    stacked_mlp,
    zbl_terms,
)

__all__ = ["FORMAT_VERSION", "StandaloneCommittee", "save_scripted", "script_committee"]

FORMAT_VERSION = 1
"""Version of the scripted module's interface (inputs, output keys) written into its metadata."""
METADATA_FILE = "pesflow.json"
"""Name of the JSON metadata stored inside the TorchScript archive (``_extra_files``)."""


def _stack(tensors: list[Tensor]) -> Tensor:
    return torch.stack([t.detach().clone() for t in tensors])


class StandaloneCommittee(nn.Module):
    """Scriptable stacked committee: K member energies, forces, stress and force deviation.

    Built by :func:`script_committee` from a native committee; every weight is a buffer (no
    gradients are needed on weights), stacked over layers ``L`` and members ``K``.

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
        sd = {k: v.detach().clone() for k, v in learned.state_dict().items()}
        n_layers = len(learned.layers)
        self.cutoff: float = float(cfg.cutoff)
        self.species: list[int] = [int(z) for z in cfg.species]
        self.n_members: int = int(cfg.n_members)
        self.n_species: int = len(cfg.species)
        self.n_basis: int = int(cfg.n_basis)
        self.n_layers: int = n_layers
        self.inv_avg: float = float(learned.layers[0].inv_avg)
        self.dtype_name: str = str(learned.dtype).removeprefix("torch.")
        self.format_version: int = FORMAT_VERSION
        self.l_lo: list[int] = [lo for lo, _ in _L_SLICES]  # angular blocks l = 0, 1, 2 of Y_lm
        self.l_hi: list[int] = [hi for _, hi in _L_SLICES]
        self.p: int = int(cfg.envelope_p)
        lut = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        for idx, z in enumerate(self.species):
            lut[z] = idx
        self.register_buffer("z_to_species", lut)
        self.register_buffer("embedding", sd["embedding"])
        self.register_buffer("bessel_freq", sd["bessel_freq"])
        self.register_buffer("energy_scale", sd["energy_scale"])
        self.register_buffer("reference_energies", sd["reference_energies"].double())
        self.register_buffer("density_shift", sd["layers.0.density_shift"])
        self.register_buffer("density_scale", sd["layers.0.density_scale"])

        def per_layer(name: str) -> torch.Tensor:
            return _stack([sd[f"layers.{i}.{name}"] for i in range(n_layers)])

        self.register_buffer("radial_w", per_layer("radial.weight"))  # (L, K, nb, C)
        mix = [[f"mix_{ab}.{s}" for s in range(len(_L_SLICES))] for ab in "ab"]
        for ab, names in zip("ab", mix, strict=True):  # (L, 3, K, C, C)
            stacked = _stack(
                [_stack([sd[f"layers.{i}.{n}"] for n in names]) for i in range(n_layers)]
            )
            self.register_buffer(f"mix_{ab}", stacked)
        for part in ("l1.weight", "l1.bias", "l2.weight", "l2.bias"):
            self.register_buffer("upd_" + part.replace(".", "_"), per_layer(f"update.{part}"))
            self.register_buffer("out_" + part.replace(".", "_"), sd[f"readout.{part}"])
        self.has_repulsion: bool = rep is not None
        for name in ("z", "r_in", "r_out"):  # per species (pair) tables, species-index order
            table = torch.zeros(0) if rep is None else getattr(rep, name).detach().clone()
            self.register_buffer(f"zbl_{name}", table.double())
        # ZBL: screening length, Coulomb constant, then phi's coefficients and exponents
        self.zbl_constants: list[float] = [SCREENING, COULOMB, *PHI_C, *PHI_B]

    # --- the learned part: atomic energies and their gradients w.r.t. the edge features ----
    def _first_layer(self, h: Tensor, dens: Tensor) -> Tensor:
        """First-layer update from the raw species-resolved density ``(K, N, S*nb, 9)``."""
        k, n, c = h.shape[0], h.shape[1], h.shape[2]
        shift = torch.zeros_like(self.density_scale)
        shift[:, 0] = self.density_shift
        dens = (dens - shift.to(dens.dtype)) * self.density_scale.to(dens.dtype)
        n_sb = dens.shape[2]
        weights = (self.embedding.unsqueeze(2) * self.radial_w[0].unsqueeze(1)).reshape(k, n_sb, c)
        moments = torch.bmm(dens.transpose(2, 3).reshape(k, n * 9, n_sb), weights)
        return self._update(0, h, moments.reshape(k, n, 9, c).transpose(2, 3))

    def _update(self, layer: int, h: Tensor, moments: Tensor) -> Tensor:
        mlp = [self.upd_l1_weight[layer], self.upd_l1_bias[layer]]
        mlp += [self.upd_l2_weight[layer], self.upd_l2_bias[layer]]
        return invariant_update(
            h, moments, self.mix_a[layer], self.mix_b[layer], mlp, self.l_lo, self.l_hi
        )

    def _readout(self, h: Tensor) -> Tensor:
        w = [self.out_l1_weight, self.out_l1_bias, self.out_l2_weight, self.out_l2_bias]
        out = stacked_mlp(h, w[0], w[1], w[2], w[3])
        return out.squeeze(-1) * self.energy_scale.to(h.dtype)

    def _single_layer(
        self, species: Tensor, neighbors: Tensor, basis: Tensor, ylm: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Atomic energies (K, N), dE_k/d basis (K, N, M, nb), dE_k/d Y (K, N, M, 9); one
        layer: the per-member density copies are the autograd leaves (``_single_layer`` of
        :class:`~mlip_core.model.CommitteePotential`)."""
        k, n_s, n_b = self.n_members, self.n_species, self.n_basis
        n, m = neighbors.shape[0], neighbors.shape[1]
        onehot = torch.nn.functional.one_hot(species[neighbors], n_s).to(basis.dtype)
        x = (basis.unsqueeze(-2) * onehot.unsqueeze(-1)).reshape(n, m, n_s * n_b)
        dens = torch.bmm(x.transpose(1, 2), ylm)
        dens_k = dens.unsqueeze(0).expand(k, -1, -1, -1).clone().requires_grad_(True)
        e_atoms = self._readout(self._first_layer(self.embedding[:, species], dens_k))
        g = torch.autograd.grad([e_atoms.sum()], [dens_k])[0]
        assert g is not None
        g_x = torch.bmm(ylm, g.permute(1, 3, 0, 2).reshape(n, 9, k * n_s * n_b))
        g_x = g_x.reshape(n, m, k, n_s, n_b)
        one = n_s == 1
        g_basis = g_x[:, :, :, 0] if one else (g_x * onehot.unsqueeze(2).unsqueeze(-1)).sum(3)
        g_ylm = torch.bmm(x, g.permute(1, 2, 0, 3).reshape(n, n_s * n_b, k * 9))
        g_ylm = g_ylm.reshape(n, m, k, 9).permute(2, 0, 1, 3)
        return e_atoms.detach(), g_basis.permute(2, 0, 1, 3), g_ylm

    def _message_passing(
        self, species: Tensor, neighbors: Tensor, basis: Tensor, ylm: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Same outputs as :meth:`_single_layer` for any number of layers (per-edge leaves)."""
        k, n_s, n_b = self.n_members, self.n_species, self.n_basis
        n, m = neighbors.shape[0], neighbors.shape[1]
        basis_k = basis.unsqueeze(0).expand(k, -1, -1, -1).clone().requires_grad_(True)
        ylm_k = ylm.unsqueeze(0).expand(k, -1, -1, -1).clone().requires_grad_(True)
        onehot = torch.nn.functional.one_hot(species[neighbors], n_s).to(basis.dtype)
        x = (basis_k.unsqueeze(-2) * onehot.unsqueeze(0).unsqueeze(-1)).reshape(k * n, m, -1)
        dens = torch.bmm(x.transpose(1, 2), ylm_k.reshape(k * n, m, 9))
        h = self._first_layer(self.embedding[:, species], dens.reshape(k, n, n_s * n_b, 9))
        c = h.shape[2]
        for layer in range(1, self.n_layers):
            radial = torch.bmm(basis_k.reshape(k, -1, n_b), self.radial_w[layer])
            messages = radial.reshape(k, n, m, c) * h[:, neighbors]
            moments = torch.bmm(
                messages.reshape(k * n, m, c).transpose(1, 2), ylm_k.reshape(k * n, m, 9)
            ).reshape(k, n, c, 9)
            h = self._update(layer, h, moments * self.inv_avg)
        e_atoms = self._readout(h)
        grads = torch.autograd.grad([e_atoms.sum()], [basis_k, ylm_k])
        g_b, g_y = grads[0], grads[1]
        assert g_b is not None and g_y is not None
        return e_atoms.detach(), g_b, g_y

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
        vectors = pos[neighbors] - pos.unsqueeze(1) + dense_shifts
        basis, ylm, dbasis_dd, unit = edge_features(
            vectors, mask, self.bessel_freq, self.cutoff, self.p
        )
        if self.n_layers == 1:
            e_atoms, g_basis, g_ylm = self._single_layer(species, neighbors, basis, ylm)
        else:
            e_atoms, g_basis, g_ylm = self._message_passing(species, neighbors, basis, ylm)
        batch = torch.zeros(n, dtype=torch.long, device=dev)
        learned = torch.zeros(k, 1, dtype=dtype, device=dev).index_add(1, batch, e_atoms)[:, 0]
        # dE_k/dr_ij (K, N, M, 3): radial part along the unit vector, angular part from Y_lm
        dist = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(1e-12)
        radial = (g_basis * dbasis_dd).sum(-1, keepdim=True) * (vectors / dist)
        de_dr = radial + ylm_vector_jacobian_product(
            g_ylm, unit, mask.unsqueeze(-1).to(dtype) / dist
        )
        flat = neighbors.reshape(-1)
        forces_k = -(-de_dr.sum(2)).index_add(1, flat, de_dr.reshape(k, -1, 3))
        energies = learned.to(f64) + self.reference_energies[species].sum()
        vol = torch.abs(torch.linalg.det(box)).to(dtype)
        stress_k = torch.zeros(k, 3, 3, dtype=dtype, device=dev)
        if compute_stress:
            virial = torch.einsum("nmi,knmj->knij", vectors, de_dr).sum(1)
            stress_k = 0.5 * (virial + virial.transpose(1, 2)) / vol
        if self.has_repulsion:
            tables = [self.zbl_z, self.zbl_r_in, self.zbl_r_out]
            e_rep, f_rep, s_rep = zbl_terms(
                species, neighbors, mask, pos, dense_shifts, vol, tables, self.zbl_constants
            )
            energies = energies + e_rep
            forces_k = forces_k + f_rep.to(dtype).unsqueeze(0)
            stress_k = stress_k + s_rep.to(dtype).unsqueeze(0)
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
    import copy

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
