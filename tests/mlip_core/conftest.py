"""Shared fixtures for mlip_core tests: random structures and small random committees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from mlip_core.model import CommitteePotential, ModelConfig


def random_structure(
    symbols: list[str], *, cell: float = 7.0, min_dist: float = 1.6, seed: int = 0, pbc: bool = True
) -> Atoms:
    """Atoms at random positions in a (slightly skewed) cell, no pair closer than min_dist."""
    rng = np.random.default_rng(seed)
    lattice = np.diag([cell, cell * 1.05, cell * 0.95]) + rng.uniform(-0.3, 0.3, (3, 3))
    frac: list[np.ndarray] = []
    while len(frac) < len(symbols):
        f = rng.random(3)
        ok = True
        for g in frac:
            d = f - g
            d -= np.round(d) if pbc else 0
            if np.linalg.norm(d @ lattice) < min_dist:
                ok = False
                break
        if ok:
            frac.append(f)
    return Atoms(symbols, scaled_positions=np.array(frac), cell=lattice, pbc=pbc)


@pytest.fixture(scope="module")
def model64() -> CommitteePotential:
    """A random (untrained) 3-member, 3-species committee in float64."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        species=[1, 8, 29],
        n_members=3,
        channels=16,
        avg_neighbors=20.0,
        energy_scale=0.7,
        seeds=[11, 12, 13],
    )
    m = CommitteePotential(cfg).double()
    m.reference_energies.copy_(torch.tensor([-1.1, -4.3, -3.5], dtype=torch.float64))
    return m.eval()
