"""Structures a campaign starts from: the configured initial structures and the rattled,
strained copies that form the bootstrap and validation sets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import CampaignConfig, StructurePolicy
from .config_structures import read_source

__all__ = ["bootstrap_structures", "initial_structures"]


def initial_structures(cfg: CampaignConfig, policy: StructurePolicy | None = None) -> list:
    """Read / build the configured initial structures (``ase.Atoms``, no calculator); files
    and contents are read under ``policy`` (default: the local policy of the settings' data
    directory). Raises :class:`ConfigError` naming the source when one cannot be read or holds
    a state (initial magnetic moments, charges, a constraint) the labeler cannot honour."""
    from dft_adapters import labeler_class

    from .config import ConfigError

    honours = labeler_class(cfg.labeler.name).unhonoured_state
    out = []
    for i, src in enumerate(cfg.structures):
        key = "generate"
        if src.generate is None:
            key = "content" if src.content is not None else "file"
            try:
                got = read_source(src, policy or StructurePolicy.local())
            except ValueError as exc:
                raise ConfigError(f"config: structures[{i}].{key}: {exc}") from None
        else:
            got = [src.generate.build()]
        for atoms in got:  # the state the labeler cannot honour: refused before any run
            problem = honours(atoms)
            if problem is not None:
                raise ConfigError(f"config: structures[{i}].{key}: {problem}")
        out += got
    return out


def bootstrap_structures(
    initial: Sequence, n: int, rattles: Sequence[float], strain: float, rng: np.random.Generator
) -> list:
    """``n`` copies of the initial structures (round-robin), isotropically strained by up to
    ``strain`` and rattled by Gaussian displacements (stdev cycled over ``rattles``, Å)."""
    out = []
    for j in range(n):
        a = initial[j % len(initial)].copy()
        eps = rng.uniform(-strain, strain) if strain > 0 else 0.0
        if a.pbc.all():
            a.set_cell(a.cell.array * (1 + eps), scale_atoms=True)
        sigma = rattles[j % len(rattles)]
        a.set_positions(a.positions + rng.normal(0.0, sigma, a.positions.shape))  # constraints hold
        out.append(a)
    return out
