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
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mlip_core.neighbors import AtomicGraph

__all__ = [
    "CommitteeModel",
    "CommitteeOutput",
    "CommitteePotential",
    "LoopCommittee",
    "ModelConfig",
    "evaluate",
]


@dataclass
class ModelConfig:
    """Hyper-parameters of the native potential (all JSON-serialisable).

    Attributes:
        species: atomic numbers the model knows, in species-index order.
        cutoff: radial cutoff r_c, Å.
        n_basis: Bessel radial basis functions.
        channels: feature channels per atom.
        n_layers: message-passing layers (receptive field n_layers * r_c). One layer is a
            learned l <= 2 power spectrum of the neighbor density (sees angles) and is ~3x
            cheaper to train than two.
        readout_hidden: hidden width of the atomic-energy readout MLP.
        envelope_p: exponent of the polynomial cutoff envelope (smooth to 2nd derivative).
        avg_neighbors: normalisation of neighbor sums (set from training data).
        energy_scale: scale of the learned atomic energy, eV (force RMS of training data).
        n_members: committee size K.
        seeds: one initialisation seed per member.
    """

    species: list[int]
    cutoff: float = 5.0
    n_basis: int = 8
    channels: int = 32
    n_layers: int = 1
    readout_hidden: int = 32
    envelope_p: int = 6
    avg_neighbors: float = 1.0
    energy_scale: float = 1.0
    n_members: int = 4
    seeds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.species:
            raise ValueError("a model needs at least one species")
        if len(set(self.species)) != len(self.species):
            raise ValueError(f"duplicate species in {self.species}")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {self.n_members}")
        if not self.seeds:
            self.seeds = list(range(self.n_members))
        if len(self.seeds) != self.n_members:
            raise ValueError(f"{len(self.seeds)} seeds for {self.n_members} members")

    def to_dict(self) -> dict:
        """Plain-dict form (for checkpoints)."""
        return asdict(self)


@dataclass
class CommitteeOutput:
    """Per-member predictions for a batch.

    Attributes:
        energy: ``(K, B)`` total energies, eV.
        forces: ``(K, N, 3)`` forces, eV/Å (None when not requested).
        stress: ``(K, B, 3, 3)`` stress tensors, eV/Å^3 (None when not requested or non-periodic).
    """

    energy: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None


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


class StackedLinear(nn.Module):
    """K independent linear layers applied as one batched matmul: ``(K, R, in) -> (K, R, out)``."""

    def __init__(self, n_members: int, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, d_out)) if bias else None

    def reset(self, generators: list[torch.Generator], gain: float = 1.0) -> None:
        """Initialise member k from generator k (normal, std gain/sqrt(d_in))."""
        d_in = self.weight.shape[1]
        with torch.no_grad():
            for k, g in enumerate(generators):
                w = torch.randn(self.weight.shape[1:], generator=g, dtype=torch.float64)
                self.weight[k].copy_(w * gain / math.sqrt(d_in))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``x`` of shape ``(K, ..., d_in)``."""
        shape = x.shape
        y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], y.shape[-1])


class StackedMLP(nn.Module):
    """Two stacked linear layers with a SiLU in between."""

    def __init__(self, n_members: int, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.l1 = StackedLinear(n_members, d_in, d_hidden)
        self.l2 = StackedLinear(n_members, d_hidden, d_out)

    def reset(self, generators: list[torch.Generator], out_gain: float = 1.0) -> None:
        """Initialise every member from its own generator."""
        self.l1.reset(generators, gain=math.sqrt(2.0))
        self.l2.reset(generators, gain=out_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``(K, ..., d_in)``."""
        return self.l2(torch.nn.functional.silu(self.l1(x)))


def spherical_harmonics_l2(u: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics l = 0, 1, 2 (component normalisation) of unit vectors.

    Returns ``(..., 9)``: [Y00 | Y1 (3) | Y2 (5)], with ``sum_m Y_lm(u)^2 = 2l + 1``.
    """
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    s3, s15, s5 = math.sqrt(3.0), math.sqrt(15.0), math.sqrt(5.0)
    return torch.stack(
        [
            torch.ones_like(x),
            s3 * x,
            s3 * y,
            s3 * z,
            s15 * x * y,
            s15 * y * z,
            0.5 * s5 * (3.0 * z * z - 1.0),
            s15 * x * z,
            0.5 * s15 * (x * x - y * y),
        ],
        dim=-1,
    )


def ylm_vector_jacobian_product(
    w: torch.Tensor, unit: torch.Tensor, inv_dist: torch.Tensor
) -> torch.Tensor:
    """``sum_lm w_lm dY_lm(r/|r|)/dr`` without forming the (..., 9, 3) Jacobian.

    Args:
        w: ``(K, N, M, 9)`` weights (dE/dY for each member).
        unit: ``(N, M, 3)`` unit vectors u = r/|r|.
        inv_dist: ``(N, M, 1)`` 1/|r| (0 on padding slots).

    Returns:
        ``(K, N, M, 3)``: ``(I - u u^T) (dY/du)^T w / |r|``.
    """
    x, y, z = unit[..., 0], unit[..., 1], unit[..., 2]
    s3, s15, s5 = math.sqrt(3.0), math.sqrt(15.0), math.sqrt(5.0)
    w1, w2, w3, w4, w5, w6, w7, w8 = (w[..., i] for i in range(1, 9))
    vx = s3 * w1 + s15 * (w4 * y + w7 * z + w8 * x)
    vy = s3 * w2 + s15 * (w4 * x + w5 * z - w8 * y)
    vz = s3 * w3 + s15 * (w5 * y + w7 * x) + 3.0 * s5 * w6 * z
    v = torch.stack([vx, vy, vz], dim=-1)
    return (v - (v * unit).sum(-1, keepdim=True) * unit) * inv_dist


_L_SLICES = ((0, 1), (1, 4), (4, 9))


class InteractionLayer(nn.Module):
    """One message-passing layer: angular moments of neighbor features and their invariants."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        k, c = cfg.n_members, cfg.channels
        # Linear filter on envelope-weighted Bessel functions (no bias): zero at and beyond
        # r_c with two vanishing derivatives, and cheap per edge, which keeps K members cheap.
        self.radial = StackedLinear(k, cfg.n_basis, c, bias=False)
        self.mix_a = nn.ParameterList([nn.Parameter(torch.empty(k, c, c)) for _ in _L_SLICES])
        self.mix_b = nn.ParameterList([nn.Parameter(torch.empty(k, c, c)) for _ in _L_SLICES])
        self.update = StackedMLP(k, 5 * c, c, c)
        self.inv_avg = 1.0 / max(cfg.avg_neighbors, 1.0)
        # Standardisation of the species-resolved density of the first layer (fitted on
        # training data by CommitteePotential.fit_feature_statistics): per (species, basis)
        # the l = 0 mean is subtracted, and each (species, basis, l) block is divided by its std.
        n_sb = len(cfg.species) * cfg.n_basis
        self.register_buffer("density_shift", torch.zeros(n_sb))
        self.register_buffer("density_scale", torch.full((n_sb, 9), self.inv_avg))

    def reset(self, generators: list[torch.Generator]) -> None:
        """Initialise every member from its own generator."""
        self.radial.reset(generators)
        c = self.mix_a[0].shape[1]
        with torch.no_grad():
            for plist in (self.mix_a, self.mix_b):
                for p in plist:
                    for k, g in enumerate(generators):
                        p[k].copy_(
                            torch.randn(c, c, generator=g, dtype=torch.float64) / math.sqrt(c)
                        )
        self.update.reset(generators, out_gain=0.5)

    def forward(
        self,
        h: torch.Tensor,
        neighbors: torch.Tensor,
        basis: torch.Tensor,
        ylm: torch.Tensor,
    ) -> torch.Tensor:
        """Update features ``h`` (K, N, C) from neighbors (dense (N, M) layout).

        ``basis`` (K, N, M, n_basis) already carries the cutoff envelope and padding mask.
        """
        k, n, c = h.shape
        m = neighbors.shape[1]
        messages = self.radial(basis) * h[:, neighbors]  # (K, N, M, C); 0 at and beyond r_c
        moments = torch.bmm(
            messages.reshape(k * n, m, c).transpose(1, 2), ylm.reshape(k * n, m, 9)
        ).reshape(k, n, c, 9)
        return self._update(h, moments * self.inv_avg)

    def density(
        self, neighbor_onehot: torch.Tensor, basis: torch.Tensor, ylm: torch.Tensor
    ) -> torch.Tensor:
        """Raw species-resolved density ``(R, S*nb, 9)`` for ``R`` leading rows of ``basis``."""
        *lead, m, n_b = basis.shape
        n_s = neighbor_onehot.shape[-1]
        rows = int(torch.tensor(lead).prod()) if lead else 1
        x = (basis.unsqueeze(-2) * neighbor_onehot.unsqueeze(-1)).reshape(rows, m, n_s * n_b)
        return torch.bmm(x.transpose(1, 2), ylm.reshape(rows, m, 9))

    def forward_embedded(
        self,
        h: torch.Tensor,
        embedding: torch.Tensor,
        neighbor_onehot: torch.Tensor,
        basis: torch.Tensor,
        ylm: torch.Tensor,
    ) -> torch.Tensor:
        """Same result as :meth:`forward` when neighbor features are species embeddings.

        Then ``message_ijc = sum_b basis_ijb W_bc emb[z_j, c]``, so the sum over neighbors can
        run first on a small species-resolved density ``G_i[s, b, lm] = sum_j [z_j = s]
        basis_ijb Y_lm(u_ij)`` and the member weights act per atom, not per edge.

        Args:
            h: (K, N, C) own embeddings.
            embedding: (K, S, C) species embeddings.
            neighbor_onehot: (N, M, S) species one-hot of each neighbor slot.
            basis: (K, N, M, n_basis); ylm: (K, N, M, 9).
        """
        dens = self.density(neighbor_onehot.unsqueeze(0), basis, ylm)  # (K*N, S*nb, 9)
        return self.forward_density(h, embedding, dens.reshape(h.shape[0], h.shape[1], -1, 9))

    def forward_density(
        self, h: torch.Tensor, embedding: torch.Tensor, dens: torch.Tensor
    ) -> torch.Tensor:
        """First-layer update from the raw species-resolved density ``(K, N, S*nb, 9)``."""
        k, n, c = h.shape
        n_sb = dens.shape[2]
        shift = torch.zeros_like(self.density_scale)
        shift[:, 0] = self.density_shift
        dens = (dens - shift.to(dens.dtype)) * self.density_scale.to(dens.dtype)
        weights = (embedding.unsqueeze(2) * self.radial.weight.unsqueeze(1)).reshape(k, n_sb, c)
        moments = torch.bmm(dens.transpose(2, 3).reshape(k, n * 9, n_sb), weights)
        return self._update(h, moments.reshape(k, n, 9, c).transpose(2, 3))

    def _update(self, h: torch.Tensor, moments: torch.Tensor) -> torch.Tensor:
        """Rotational invariants of the moments (K, N, C, 9) -> residual feature update."""
        k, n, c = h.shape
        feats = [h, moments[..., 0]]
        for (lo, hi), wa, wb in zip(_L_SLICES, self.mix_a, self.mix_b, strict=True):
            a_l = moments[..., lo:hi].transpose(2, 3).reshape(k, -1, c)  # (K, N*(2l+1), C)
            inv = (torch.bmm(a_l, wa) * torch.bmm(a_l, wb)).reshape(k, n, hi - lo, c).sum(2)
            feats.append(inv)
        return h + self.update(torch.cat(feats, dim=-1))


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
