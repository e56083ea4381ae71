"""The native committee potential: K message-passing models evaluated as one batched network.

Physics (see MISSION.md):
- ``E = sum_i E_i + sum_i e_ref[Z_i]``: a sum of atomic energies over local environments
  (cutoff ``r_c``) plus per-element reference energies fitted by least squares, so the model
  is extensive and transferable.
- ``F_i = -dE/dr_i`` and the stress ``sigma = (1/V) dE/d(strain)`` by automatic
  differentiation: the force field is conservative.
- Every radial function is multiplied by a polynomial envelope that vanishes with its first
  and second derivatives at ``r_c`` (also the radial MLP's output: ``MLP(0) != 0``), so the
  energy is smooth when pairs cross the cutoff and NVE conserves energy.
- Angular information: per-atom moments ``A_{i,c,lm} = sum_j R_c(r_ij) Y_lm(u_ij) h_{j,c}``
  for ``l <= 2`` and their rotational invariants ``sum_m A_lm A'_lm`` (a power spectrum: it
  sees bond angles, not only distances).

The committee is "stacked": every weight has a leading member dimension ``K``, positions are
replicated to ``(K, N, 3)``, and a single forward/backward evaluates (or trains) all members.
The neighbor graph is built once per structure and shared.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip_core.committee import CommitteeModel, CommitteeOutput, LoopCommittee, evaluate
from mlip_core.layers import (
    _L_SLICES,
    InteractionLayer,
    StackedMLP,
    spherical_harmonics_l2,
    ylm_vector_jacobian_product,
)
from mlip_core.model_config import ModelConfig
from mlip_core.neighbors import AtomicGraph

__all__ = [
    "CommitteeModel",
    "CommitteeOutput",
    "CommitteePotential",
    "LoopCommittee",
    "ModelConfig",
    "evaluate",
]


class CommitteePotential(nn.Module):
    """Stacked committee of K native potentials (see module docstring).

    Use :meth:`predict` on an :class:`~mlip_core.neighbors.AtomicGraph` built with this
    model's cutoff and :attr:`species_index`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k, c, s = config.n_members, config.channels, len(config.species)
        self.embedding = nn.Parameter(torch.empty(k, s, c))
        self.layers = nn.ModuleList([InteractionLayer(config) for _ in range(config.n_layers)])
        self.readout = StackedMLP(k, c, config.readout_hidden, 1)
        # Per-element reference energies (eV), fitted by least squares, kept in float64.
        self.register_buffer("reference_energies", torch.zeros(s, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.tensor(float(config.energy_scale)))
        self.register_buffer(
            "bessel_freq", torch.arange(1, config.n_basis + 1, dtype=torch.float64) * math.pi
        )
        self.reset_parameters()

    # --- protocol ---------------------------------------------------------------------------
    @property
    def species(self) -> list[int]:
        """Atomic numbers known to the model."""
        return list(self.config.species)

    @property
    def species_index(self) -> dict[int, int]:
        """Map atomic number -> species index."""
        return {z: i for i, z in enumerate(self.config.species)}

    @property
    def cutoff(self) -> float:
        """Cutoff radius, Å."""
        return float(self.config.cutoff)

    @property
    def n_members(self) -> int:
        """Committee size K."""
        return int(self.config.n_members)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return self.embedding.dtype

    def select_members(self, indices: list[int]) -> CommitteePotential:
        """A new committee made of copies of the given members (same weights, same buffers)."""
        if not indices or any(not 0 <= i < self.n_members for i in indices):
            raise ValueError(f"member indices must be in [0, {self.n_members}), got {indices}")
        cfg = ModelConfig(
            **{
                **self.config.to_dict(),
                "n_members": len(indices),
                "seeds": [self.config.seeds[i] for i in indices],
            }
        )
        new = CommitteePotential(cfg).to(self.dtype)
        idx = torch.as_tensor(indices, dtype=torch.long)
        with torch.no_grad():
            own = dict(self.named_parameters())
            for name, param in new.named_parameters():
                param.copy_(own[name].index_select(0, idx))
            for name, buf in self.named_buffers():
                new.get_buffer(name).copy_(buf)
        return new

    @torch.no_grad()
    def fit_feature_statistics(self, graphs: list[AtomicGraph]) -> None:
        """Standardise the first layer's species-resolved density on training graphs.

        Without it the l = 1, 2 moments of near-symmetric environments are ~100x smaller
        than l = 0 and their invariants (products) start invisible to the network.
        """
        layer = self.layers[0]
        n_s, n_b = len(self.config.species), self.config.n_basis
        dens_all = []
        for g in graphs:
            pos = g.positions.to(self.dtype)
            vec = pos[g.neighbors] - pos.unsqueeze(1) + g.shifts.to(self.dtype)
            basis, ylm, _, _ = self.edge_features(vec, g.mask, with_jacobian=False)
            onehot = torch.nn.functional.one_hot(g.species[g.neighbors], n_s).to(basis.dtype)
            dens_all.append(layer.density(onehot, basis, ylm).double())
        dens = torch.cat(dens_all)  # (atoms, S*nb, 9)
        mean0 = dens[..., 0].mean(0)
        centred = dens.clone()
        centred[..., 0] -= mean0
        scale = torch.empty(n_s * n_b, 9, dtype=torch.float64)
        for lo, hi in _L_SLICES:
            std = centred[..., lo:hi].pow(2).mean(dim=(0, 2)).sqrt()  # (S*nb,)
            ok = std > 1e-8
            inv = torch.where(ok, 1.0 / std.clamp_min(1e-8), torch.full_like(std, layer.inv_avg))
            scale[:, lo:hi] = inv.unsqueeze(-1)
        layer.density_shift.copy_(mean0)
        layer.density_scale.copy_(scale)

    def reset_parameters(self) -> None:
        """Initialise member k from its own seed (independent initialisation = diversity)."""
        gens = [torch.Generator().manual_seed(int(s)) for s in self.config.seeds]
        with torch.no_grad():
            for k, g in enumerate(gens):
                emb = torch.randn(self.embedding.shape[1:], generator=g, dtype=torch.float64)
                self.embedding[k].copy_(emb)
        for layer in self.layers:
            layer.reset(gens)
        self.readout.reset(gens, out_gain=0.1)

    # --- physics ----------------------------------------------------------------------------
    def edge_features(
        self, vectors: torch.Tensor, mask: torch.Tensor, with_jacobian: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Shared geometry of the edges, computed once for all committee members.

        Args:
            vectors: ``(N, M, 3)`` neighbor vectors r_ij (padding slots arbitrary).
            mask: ``(N, M)`` real-neighbor mask.
            with_jacobian: also return the analytic derivatives w.r.t. ``vectors``.

        Returns:
            ``basis (N, M, n_basis)`` (Bessel x envelope, 0 on padding), ``ylm (N, M, 9)``,
            and, with the Jacobian, ``d basis / d|r| (N, M, n_basis)`` (the basis Jacobian is
            this times the unit vector, rank one) and the unit vectors ``(N, M, 3)`` for
            :func:`ylm_vector_jacobian_product`.
        """
        cfg = self.config
        p, rc = cfg.envelope_p, cfg.cutoff
        far = torch.zeros_like(vectors)
        far[..., 0] = 2.0 * rc
        safe = torch.where(mask.unsqueeze(-1), vectors, far)
        dist = torch.linalg.vector_norm(safe, dim=-1)  # (N, M)
        unit = safe / dist.unsqueeze(-1)
        x = dist / rc
        inside = (x < 1.0) & mask
        ca, cb, cc = (p + 1) * (p + 2) / 2.0, p * (p + 2.0), p * (p + 1) / 2.0
        env = torch.where(inside, 1.0 - ca * x**p + cb * x ** (p + 1) - cc * x ** (p + 2), 0.0)
        freq = (self.bessel_freq / rc).to(dist.dtype)  # (n_basis,)
        arg = dist.unsqueeze(-1) * freq
        sin = torch.sin(arg)
        norm = math.sqrt(2.0 / rc)
        inv_d = (1.0 / dist).unsqueeze(-1)
        basis = norm * sin * (env.unsqueeze(-1) * inv_d)
        ylm = spherical_harmonics_l2(unit)
        if not with_jacobian:
            return basis, ylm, None, None
        denv = torch.where(
            inside,
            (-ca * p * x ** (p - 1) + cb * (p + 1) * x**p - cc * (p + 2) * x ** (p + 1)) / rc,
            0.0,
        )
        dbasis_dd = (
            norm
            * inv_d
            * (
                freq * torch.cos(arg) * env.unsqueeze(-1)
                + sin * denv.unsqueeze(-1)
                - sin * env.unsqueeze(-1) * inv_d
            )
        )
        return basis, ylm, dbasis_dd, unit

    def atomic_energies(
        self, basis: torch.Tensor, ylm: torch.Tensor, graph: AtomicGraph
    ) -> torch.Tensor:
        """Learned atomic energies ``(K, N)`` in eV (without reference energies).

        Args:
            basis: ``(K, N, M, n_basis)`` envelope-weighted radial basis per member.
            ylm: ``(K, N, M, 9)`` spherical harmonics of the edge directions per member.
            graph: the graph (species, neighbors).
        """
        h = self.embedding[:, graph.species]  # (K, N, C)
        onehot = torch.nn.functional.one_hot(
            graph.species[graph.neighbors], len(self.config.species)
        ).to(basis.dtype)
        for i, layer in enumerate(self.layers):
            if i == 0:
                h = layer.forward_embedded(h, self.embedding, onehot, basis, ylm)
            else:
                h = layer(h, graph.neighbors, basis, ylm)
        return self.readout(h).squeeze(-1) * self.energy_scale.to(h.dtype)

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """Per-member energies, forces (-dE/dr) and stress ((1/V) dE/d strain) of a batch.

        The edge geometry and its Jacobian are computed once; the K member networks run as
        one stacked network; one backward gives dE_k/d(edge features) for every member, which
        the shared Jacobian turns into dE_k/dr_ij, then forces (F_i = -dE/dx_i) and the
        virial stress ((1/V) sum_ij r_ij (x) dE/dr_ij, the strain derivative).

        Args:
            graph: batch built with this model's cutoff and species index.
            compute_forces: differentiate for forces.
            compute_stress: differentiate for the stress (periodic structures).
            create_graph: keep the graph of the derivatives (for force training).
        """
        k, dtype = self.n_members, self.dtype
        n, b = graph.positions.shape[0], graph.n_structures
        if n == 0:
            raise ValueError("cannot evaluate a structure with no atoms")
        pos = graph.positions.to(dtype)
        vectors = pos[graph.neighbors] - pos.unsqueeze(1) + graph.shifts.to(dtype)
        need_grad = compute_forces or compute_stress
        basis, ylm, dbasis_dd, unit = self.edge_features(vectors, graph.mask, need_grad)
        path = self._single_layer if self.config.n_layers == 1 else self._message_passing
        e_atoms, g_basis, g_ylm = path(graph, basis, ylm, need_grad, create_graph)
        energy = torch.zeros(k, b, dtype=dtype, device=pos.device).index_add(
            1, graph.batch, e_atoms
        )
        de_dr = None
        if need_grad:
            # dE_k/dr_ij (K, N, M, 3): the radial part is along the unit vector
            dist = vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            radial = (g_basis * dbasis_dd).sum(-1, keepdim=True) * (vectors / dist)  # type: ignore[operator]
            mask = graph.mask.unsqueeze(-1).to(dtype)
            de_dr = radial + ylm_vector_jacobian_product(g_ylm, unit, mask / dist)  # type: ignore[arg-type]
        forces = stress = None
        if de_dr is not None:
            if compute_forces:
                # r_ij = x_j - x_i + shift: dE/dx_a = sum_{j->a} dE/dr - sum_m dE/dr_am
                grad_x = (-de_dr.sum(2)).index_add(
                    1, graph.neighbors.reshape(-1), de_dr.reshape(k, -1, 3)
                )
                forces = -grad_x
            if compute_stress:
                vol = graph.volume.to(dtype)
                if bool((vol <= 0).any()):
                    raise ValueError("stress requested for a non-periodic structure (no volume)")
                virial = torch.einsum("nmi,knmj->knij", vectors, de_dr)
                per_struct = torch.zeros(k, b, 3, 3, dtype=dtype, device=pos.device).index_add(
                    1, graph.batch, virial
                )
                stress = 0.5 * (per_struct + per_struct.transpose(-1, -2)) / vol.view(1, b, 1, 1)
        ref = torch.zeros(b, dtype=torch.float64, device=pos.device).index_add(
            0, graph.batch, self.reference_energies[graph.species]
        )
        return CommitteeOutput(
            energy=energy.to(torch.float64) + ref.unsqueeze(0), forces=forces, stress=stress
        )

    def _single_layer(
        self,
        graph: AtomicGraph,
        basis: torch.Tensor,
        ylm: torch.Tensor,
        need_grad: bool,
        create_graph: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Atomic energies (K, N) and dE_k/d(basis) (K, N, M, nb), dE_k/d(Y) (K, N, M, 9).

        One layer: the species-resolved density (N, S*nb, 9) is computed once; its per-member
        copies are the autograd leaves, and two batched matmuls against the shared edge
        tensors turn dE_k/d(density) into the per-edge gradients.
        """
        k, dtype = self.n_members, self.dtype
        n, m = graph.neighbors.shape
        n_s, n_b = len(self.config.species), self.config.n_basis
        onehot = torch.nn.functional.one_hot(graph.species[graph.neighbors], n_s).to(dtype)
        x = (basis.unsqueeze(-2) * onehot.unsqueeze(-1)).reshape(n, m, n_s * n_b)
        dens = torch.bmm(x.transpose(1, 2), ylm)  # (N, S*nb, 9), shared by all members
        dens_k = dens.unsqueeze(0).expand(k, -1, -1, -1)
        with torch.enable_grad() if need_grad else torch.no_grad():
            if need_grad:
                dens_k = dens_k.clone().requires_grad_(True)
            h = self.layers[0].forward_density(
                self.embedding[:, graph.species], self.embedding, dens_k
            )
            e_atoms = self.readout(h).squeeze(-1) * self.energy_scale.to(h.dtype)
            if not need_grad:
                return e_atoms, None, None
            (g,) = torch.autograd.grad(e_atoms.sum(), [dens_k], create_graph=create_graph)
        g_x = torch.bmm(ylm, g.permute(1, 3, 0, 2).reshape(n, 9, k * n_s * n_b))
        g_x = g_x.reshape(n, m, k, n_s, n_b)
        g_basis = g_x[:, :, :, 0] if n_s == 1 else (g_x * onehot[:, :, None, :, None]).sum(3)
        g_ylm = torch.bmm(x, g.permute(1, 2, 0, 3).reshape(n, n_s * n_b, k * 9))
        return e_atoms, g_basis.permute(2, 0, 1, 3), g_ylm.reshape(n, m, k, 9).permute(2, 0, 1, 3)

    def _message_passing(
        self,
        graph: AtomicGraph,
        basis: torch.Tensor,
        ylm: torch.Tensor,
        need_grad: bool,
        create_graph: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Same outputs as :meth:`_single_layer` for any number of layers (per-edge leaves)."""
        k = self.n_members
        basis_k = basis.unsqueeze(0).expand(k, -1, -1, -1)
        ylm_k = ylm.unsqueeze(0).expand(k, -1, -1, -1)
        with torch.enable_grad() if need_grad else torch.no_grad():
            if need_grad:
                basis_k = basis_k.clone().requires_grad_(True)
                ylm_k = ylm_k.clone().requires_grad_(True)
            e_atoms = self.atomic_energies(basis_k, ylm_k, graph)
            if not need_grad:
                return e_atoms, None, None
            g_b, g_y = torch.autograd.grad(
                e_atoms.sum(), [basis_k, ylm_k], create_graph=create_graph
            )
        return e_atoms, g_b, g_y

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Reference energies stay float64 whatever dtype the weights are cast to: DFT
        # energies of hundreds of eV per atom lose meV precision in float32.
        ref = self.reference_energies
        super()._apply(fn, recurse)
        self.reference_energies = ref.to(device=self.embedding.device, dtype=torch.float64)
        return self
