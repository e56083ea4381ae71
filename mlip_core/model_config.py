"""Hyper-parameters of the native committee potential."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["ModelConfig"]


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
