"""Parameters of the native stacked committee (every weight has a member axis K).

:class:`StackedLinear` / :class:`StackedMLP` are K independent layers evaluated as one batched
matmul; :class:`InteractionLayer` one message-passing layer (an l <= 2 power spectrum of the
neighbour density). The modules hold and initialise the weights; what they compute is defined
once, in :mod:`mlip_core.functional` (shared with the TorchScript export). See
:mod:`mlip_core.model` for the physics.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip_core.functional import (
    LayerWeights,
    MLPWeights,
    embedded_layer,
    interaction,
    mlp,
    species_density,
    stacked_linear,
)
from mlip_core.model_config import ModelConfig

__all__ = ["InteractionLayer", "StackedLinear", "StackedMLP"]

_L_SLICES = ((0, 1), (1, 4), (4, 9))
"""Blocks ``[l^2, (l + 1)^2)`` of the degrees l = 0, 1, 2 in the spherical harmonics."""


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
        return stacked_linear(x, self.weight, self.bias)


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

    def weights(self) -> MLPWeights:
        """The weights as :func:`~mlip_core.functional.mlp` takes them (TorchScript compiles
        this method: :mod:`mlip_core.standalone` calls it)."""
        b1, b2 = self.l1.bias, self.l2.bias
        assert b1 is not None and b2 is not None
        return MLPWeights(self.l1.weight, b1, self.l2.weight, b2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``(K, ..., d_in)``."""
        return mlp(x, self.weights())


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

    def weights(self) -> LayerWeights:
        """The weights as :mod:`mlip_core.functional` takes them (TorchScript compiles this
        method: :mod:`mlip_core.standalone` calls it)."""
        return LayerWeights(
            self.radial.weight,
            list(self.mix_a),
            list(self.mix_b),
            self.update.weights(),
            self.inv_avg,
            self.density_shift,
            self.density_scale,
        )

    def forward(
        self, h: torch.Tensor, neighbors: torch.Tensor, basis: torch.Tensor, ylm: torch.Tensor
    ) -> torch.Tensor:
        """Update features ``h`` (K, N, C) from neighbors (dense (N, M) layout) by
        :func:`~mlip_core.functional.interaction`; ``basis`` (K, N, M, n_basis) carries the
        cutoff envelope and padding mask."""
        return interaction(h, neighbors, basis, ylm, self.weights())

    def density(
        self, neighbor_onehot: torch.Tensor, basis: torch.Tensor, ylm: torch.Tensor
    ) -> torch.Tensor:
        """Raw species-resolved density ``(R, S*nb, 9)`` for ``R`` leading rows of ``basis``."""
        return species_density(neighbor_onehot, basis, ylm)[1]

    def forward_embedded(
        self,
        h: torch.Tensor,
        embedding: torch.Tensor,
        neighbor_onehot: torch.Tensor,
        basis: torch.Tensor,
        ylm: torch.Tensor,
    ) -> torch.Tensor:
        """Same result as :meth:`forward` when neighbor features are species embeddings
        (:func:`~mlip_core.functional.embedded_layer`: the sum over neighbors runs first, on
        the density).

        Args:
            h: (K, N, C) own embeddings.
            embedding: (K, S, C) species embeddings.
            neighbor_onehot: (N, M, S) species one-hot of each neighbor slot.
            basis: (K, N, M, n_basis); ylm: (K, N, M, 9).
        """
        dens = self.density(neighbor_onehot.unsqueeze(0), basis, ylm)  # (K*N, S*nb, 9)
        dens = dens.reshape(h.shape[0], h.shape[1], -1, 9)
        return embedded_layer(h, dens, embedding, self.weights())
