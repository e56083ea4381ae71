"""Building blocks of the native stacked committee (every weight has a member axis K).

:class:`StackedLinear` / :class:`StackedMLP` are K independent layers evaluated as one batched
matmul; :func:`spherical_harmonics_l2` the real spherical harmonics up to l = 2 (and their
vector-Jacobian product); :class:`InteractionLayer` one message-passing layer (an l <= 2 power
spectrum of the neighbour density). See :mod:`mlip_core.model` for the physics.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip_core.model_config import ModelConfig

__all__ = ["InteractionLayer", "StackedLinear", "StackedMLP", "spherical_harmonics_l2"]


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
    # explicit indexing (not a generator) so that torch.jit.script compiles it
    w1, w2, w3, w4 = w[..., 1], w[..., 2], w[..., 3], w[..., 4]
    w5, w6, w7, w8 = w[..., 5], w[..., 6], w[..., 7], w[..., 8]
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
