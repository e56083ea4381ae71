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

The computation itself is :mod:`mlip_core.functional` (pure TorchScript-compilable functions
of the weights), the one definition shared with the export (:mod:`mlip_core.standalone`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip_core import functional
from mlip_core.committee import CommitteeModel, CommitteeOutput, LoopCommittee, evaluate
from mlip_core.functional import CommitteeWeights
from mlip_core.layers import _L_SLICES, InteractionLayer, StackedMLP
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
            vec = functional.edge_vectors(
                g.positions.to(self.dtype), g.neighbors, g.shifts.to(self.dtype)
            )
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
        """Shared geometry of the edges ``vectors (N, M, 3)`` (``mask (N, M)``), computed once
        for all members: ``basis``, ``ylm`` and, ``with_jacobian``, ``d basis / d|r|`` and the
        unit vectors (:func:`mlip_core.functional.edge_features`)."""
        cfg = self.config
        return functional.edge_features(
            vectors, mask, self.bessel_freq, float(cfg.cutoff), int(cfg.envelope_p), with_jacobian
        )

    def weights(self) -> CommitteeWeights:
        """The learned weights as :mod:`mlip_core.functional` takes them (the parameters
        themselves, not copies: gradients flow through)."""
        return CommitteeWeights(
            self.embedding,
            [layer.weights() for layer in self.layers],
            self.readout.weights(),
            self.energy_scale,
        )

    def atomic_energies(
        self, basis: torch.Tensor, ylm: torch.Tensor, graph: AtomicGraph
    ) -> torch.Tensor:
        """Learned atomic energies ``(K, N)`` in eV (without reference energies).

        Args:
            basis: ``(K, N, M, n_basis)`` envelope-weighted radial basis per member.
            ylm: ``(K, N, M, 9)`` spherical harmonics of the edge directions per member.
            graph: the graph (species, neighbors).
        """
        return functional.atomic_energies(
            graph.species, graph.neighbors, basis, ylm, self.weights()
        )

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
        if compute_stress and bool((graph.volume <= 0).any()):
            raise ValueError("stress requested for a non-periodic structure (no volume)")
        pos = graph.positions.to(dtype)
        vectors = functional.edge_vectors(pos, graph.neighbors, graph.shifts.to(dtype))
        need_grad = compute_forces or compute_stress
        basis, ylm, dbasis_dd, unit = self.edge_features(vectors, graph.mask, need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            e_atoms, g_basis, g_ylm = functional.energies_and_edge_gradients(
                graph.species, graph.neighbors, basis, ylm, self.weights(), need_grad, create_graph
            )
        energy = torch.zeros(k, b, dtype=dtype, device=pos.device).index_add(
            1, graph.batch, e_atoms
        )
        forces = stress = None
        if need_grad:
            assert g_basis is not None and g_ylm is not None
            assert dbasis_dd is not None and unit is not None
            de_dr = functional.edge_gradient(vectors, graph.mask, g_basis, dbasis_dd, g_ylm, unit)
            if compute_forces:
                forces = functional.edge_forces(de_dr, graph.neighbors)
            if compute_stress:
                stress = functional.edge_stress(
                    vectors, de_dr, graph.batch, b, graph.volume.to(dtype)
                )
        ref = torch.zeros(b, dtype=torch.float64, device=pos.device).index_add(
            0, graph.batch, self.reference_energies[graph.species]
        )
        return CommitteeOutput(
            energy=energy.to(torch.float64) + ref.unsqueeze(0), forces=forces, stress=stress
        )

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Reference energies stay float64 whatever dtype the weights are cast to: DFT
        # energies of hundreds of eV per atom lose meV precision in float32.
        ref = self.reference_energies
        super()._apply(fn, recurse)
        self.reference_energies = ref.to(device=self.embedding.device, dtype=torch.float64)
        return self
