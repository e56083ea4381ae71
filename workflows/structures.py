"""Structures a campaign starts from: the configured initial structures and the rattled,
strained copies that form the bootstrap and validation sets."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .config import CampaignConfig, StructurePolicy
from .config_modifiers import apply_modifiers
from .config_structures import read_source
from .context import seed_of

__all__ = ["bootstrap_structures", "initial_structures"]

log = logging.getLogger("pesflow")


def initial_structures(
    cfg: CampaignConfig,
    policy: StructurePolicy | None = None,
    warnings: list[str] | None = None,
    regimes: list[str] | None = None,
    sources: list[int] | None = None,
) -> list:
    """Read / build the configured initial structures (``ase.Atoms``, no calculator); files
    and contents are read under ``policy`` (default: the local policy of the settings' data
    directory). Raises :class:`ConfigError` naming the source when one cannot be read or holds
    a state (initial magnetic moments, charges, a constraint) the labeler cannot honour, or that
    fails :func:`workflows.config_physics.structure_problems` (whose warnings are logged and
    appended to ``warnings``). A source's modifiers (vacancies, interstitials, substitute,
    strain: :mod:`workflows.config_modifiers`) are applied with a generator seeded by the
    campaign seed and the source's index, so set-up and ``pesflow validate`` build the same
    structures. ``regimes`` and ``sources``, when given, receive each structure's regime name
    and the index of its source in ``cfg.structures``
    (:meth:`~workflows.config_structures.StructureSource.regime_name` of its source)."""
    from dft_adapters import labeler_class
    from mlip_core.monitor import DistanceGuard

    from .config import ConfigError

    guard = DistanceGuard(cfg.exploration.min_distance, cfg.exploration.min_distance_fraction)
    out, where, names, index = [], [], [], []
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
        if src.modified():
            rng = np.random.default_rng(seed_of(cfg.seed, "structures", i))
            try:
                got = apply_modifiers(got, src, rng, guard)
            except ValueError as exc:
                raise ConfigError(f"config: structures[{i}].{exc}") from None
        out += got
        names += [src.regime_name()] * len(got)
        index += [i] * len(got)
        where += [
            f"structures[{i}].{key}" + (f" frame {k}" if len(got) > 1 else "")
            for k in range(len(got))
        ]
    from .config_physics import structure_problems

    errors, warned = structure_problems(cfg, out, where)
    if errors:
        raise ConfigError(f"config: {errors[0]}")
    honours = labeler_class(cfg.labeler.name).unhonoured_state
    for atoms, key in zip(out, where, strict=True):  # also where no pre-flight ran (profiles)
        problem = honours(atoms)
        if problem is not None:
            raise ConfigError(f"config: {key}: {problem}")
    for text in warned:
        log.warning("config: %s", text)
    if warnings is not None:
        warnings += warned
    if regimes is not None:
        regimes += names
    if sources is not None:
        sources += index
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
