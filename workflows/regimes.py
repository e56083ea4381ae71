"""Regimes of a campaign's structures: which region of phase space a frame stands for.

A regime is a name: each initial structure has the one of its source
(:meth:`workflows.config_structures.StructureSource.regime_name`, recorded at set-up,
:attr:`workflows.context.Context.initial_regimes`); a walker's frames have its ``regime`` when
the walker config names one, else the regime of the structure it starts from. The name is
stored with a structure in its ``info`` under :data:`REGIME_KEY` (validation and bootstrap
copies by the seed step, explored frames by the explore step), so it survives restarts;
validation errors and the convergence rule are per regime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "EXPLORED",
    "REGIME_KEY",
    "regime_of",
    "structure_regimes",
    "validation_shares",
    "walker_regime",
]

REGIME_KEY = "regime"
"""``Structure.info`` key holding a structure's regime name."""

EXPLORED = "explored"
"""Regime of an explored frame whose walker's regime is unknown (it started from a stored
structure and names none, or it was explored before regimes were recorded)."""


def validation_shares(n: int, regimes: Sequence[str]) -> dict[str, int]:
    """How many of ``n`` validation structures each regime gets: the R distinct names of
    ``regimes`` (in order of first appearance) get ``n // R`` each, the first ``n % R`` one
    more (the config refuses an ``n`` that leaves a regime below ``min_per_regime``).

    Raises:
        ValueError: no regimes, or ``n < 0``.
    """
    names = list(dict.fromkeys(regimes))
    if not names or n < 0:
        raise ValueError(f"cannot share {n} validation structures over regimes {names}")
    q, r = divmod(n, len(names))
    return {name: q + (1 if i < r else 0) for i, name in enumerate(names)}


def walker_regime(walker: Any, start: int | None, initial_regimes: Sequence[str]) -> str:
    """The regime of a walker's frames: its config's ``regime`` when set, else the regime of
    the initial structure ``start`` it starts from, else :data:`EXPLORED`."""
    named = getattr(walker, "regime", None)
    if named:
        return str(named)
    if start is not None and 0 <= start < len(initial_regimes):
        return initial_regimes[start]
    return EXPLORED


def regime_of(info: dict[str, Any] | None, default: str = EXPLORED) -> str:
    """The regime recorded in a structure's ``info`` (``default`` when none is)."""
    name = (info or {}).get(REGIME_KEY)
    return str(name) if name else default


def structure_regimes(ctx: Any, records: Sequence[Any]) -> list[str]:
    """The regime of each stored structure (``StructureRecord``) of campaign ``ctx``: the one in
    its ``info``; else, for one of the campaign's initial structures (e.g. a walker's start
    frame, stored once), that structure's regime; else the campaign's only regime, or
    :data:`EXPLORED` when it has several (frames stored before regimes were recorded)."""
    initial = dict(zip(ctx.runtime["initial_structure_ids"], ctx.initial_regimes, strict=True))
    names = set(ctx.initial_regimes)
    default = names.pop() if len(names) == 1 else EXPLORED
    return [regime_of(r.info, initial.get(r.id, default)) for r in records]
