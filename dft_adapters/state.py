"""The per-atom state a backend passes to its code, or refuses (see ``Labeler.honours``):
collinear initial magnetic moments and initial charges (as the system's total charge).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from ase import Atoms

from .results import FailureKind, LabelError

__all__ = ["total_charge", "unhonoured"]

_NAMES = {"initial_magmoms": "initial magnetic moments", "initial_charges": "initial charges"}


def unhonoured(name: str, honours: Collection[str], atoms: Atoms) -> str | None:
    """Why labeler ``name``, passing ``honours`` to its code, cannot compute ``atoms`` as
    given: initial magnetic moments or charges it does not pass (the message names the
    labelers that do), non-collinear moments, or a state pesflow does not keep
    (:func:`structure_checks.state.physical_state`); ``None`` when it can."""
    from structure_checks.state import StateError, physical_state

    from .registry import available_labelers, labeler_class

    try:
        state = physical_state(atoms)
    except StateError as exc:
        return str(exc)
    for key, what in _NAMES.items():
        if key not in state:
            continue
        if key not in honours:
            takers = sorted(n for n in available_labelers() if key in _honours(n, labeler_class))
            return (
                f"labeler {name!r} does not pass the structure's {what} to its code; refused "
                "rather than computed as another state (remove them from the structure, or "
                f"use {' / '.join(takers) or 'another labeler'})"
            )
        if np.ndim(state[key]) != 1:
            return f"non-collinear {what} are not passed by labeler {name!r}"
    return None


def _honours(name: str, labeler_class: Callable[[str], Any]) -> frozenset[str]:
    """What labeler ``name`` honours; empty when its class cannot be loaded (a broken
    plug-in does not stop the message about another labeler)."""
    try:
        return labeler_class(name).honours
    except ImportError:
        return frozenset()


def total_charge(atoms: Atoms, setting: int = 0) -> int:
    """The system's total charge (e) for codes that take only a total: the sum of the
    structure's initial charges (a whole number; the per-atom split is a starting guess no
    code here takes), or ``setting`` (the labeler's ``charge``) when it has none. Raises
    ``LabelError`` (``invalid_input``) for a fractional sum or one that disagrees with a
    non-zero ``setting``."""
    q = atoms.get_initial_charges()
    if not np.any(q):
        return int(setting)
    total = float(q.sum())
    if abs(total - round(total)) > 1e-6:
        raise LabelError(
            FailureKind.INVALID_INPUT,
            f"initial charges sum to {total:g} e, not a whole number (the code takes only the "
            "total charge)",
        )
    if setting and setting != round(total):
        raise LabelError(
            FailureKind.INVALID_INPUT,
            f"settings.charge={setting} disagrees with the initial charges (sum {round(total)})",
        )
    return round(total)
