"""Per-structure physical state besides numbers, positions, cell and pbc: what changes the
physics and must travel with a structure from the file the user gave to the store, the walkers
and the labelers — never dropped on the way.

``physical_state(atoms)`` returns it as plain JSON data (only what is set):

- ``constraints``: ASE's own ``todict()`` of each constraint (``FixAtoms``, ``FixCartesian``,
  ``FixScaled``: VASP's selective dynamics; ``FixedLine``, ``FixedPlane``); other constraint types
  (restraints, bond constraints, filters) are refused with :class:`StateError`;
- ``initial_magmoms``: ``(N,)`` collinear or ``(N, 3)`` non-collinear, μB;
- ``initial_charges``: ``(N,)`` e;
- ``tags``: ``(N,)`` integers (ASE's slab layers, adsorbate markers).

``apply_state(atoms, state)`` puts it back (ASE's ``dict2constraint``). The store hashes the state
with the geometry, so an antiferromagnetic and a ferromagnetic copy of one geometry are two
structures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SUPPORTED_CONSTRAINTS", "StateError", "apply_state", "physical_state"]

SUPPORTED_CONSTRAINTS = ("FixAtoms", "FixCartesian", "FixScaled", "FixedLine", "FixedPlane")
"""Constraints kept with a structure (those a file format or a slab model gives)."""


class StateError(ValueError):
    """A structure's state that pesflow cannot keep (a constraint type it does not store)."""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def physical_state(atoms: Any) -> dict[str, Any]:
    """The state of ``atoms`` beyond its geometry as plain JSON data (see module docstring);
    ``{}`` when it has none. Raises :class:`StateError` for a constraint it does not keep or a
    non-finite moment/charge."""
    state: dict[str, Any] = {}
    constraints = []
    for c in getattr(atoms, "constraints", None) or []:
        name = type(c).__name__
        if name not in SUPPORTED_CONSTRAINTS:
            raise StateError(
                f"constraint {name} is not kept by pesflow (kept: {', '.join(SUPPORTED_CONSTRAINTS)})"
            )
        constraints.append(_plain(c.todict()))
    if constraints:
        state["constraints"] = constraints
    arrays = getattr(atoms, "arrays", {})
    for key, name in (
        ("initial_magmoms", "initial magnetic moments"),
        ("initial_charges", "initial charges"),
    ):
        if key in arrays:
            values = np.asarray(arrays[key], dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise StateError(f"{name} are not all finite")
            if np.any(values != 0):
                state[key] = _plain(values)
    if "tags" in arrays and np.any(np.asarray(arrays["tags"]) != 0):
        state["tags"] = _plain(np.asarray(arrays["tags"], dtype=np.int64))
    return state


def apply_state(atoms: Any, state: dict[str, Any] | None) -> Any:
    """Set ``state`` (from :func:`physical_state`) on ``atoms`` in place and return it."""
    if not state:
        return atoms
    from ase.constraints import dict2constraint

    if "initial_magmoms" in state:
        atoms.set_initial_magnetic_moments(np.asarray(state["initial_magmoms"], dtype=np.float64))
    if "initial_charges" in state:
        atoms.set_initial_charges(np.asarray(state["initial_charges"], dtype=np.float64))
    if "tags" in state:
        atoms.set_tags(np.asarray(state["tags"], dtype=np.int64))
    if "constraints" in state:
        atoms.set_constraint([dict2constraint(dict(c)) for c in state["constraints"]])
    return atoms
