"""Canonical content hash of a structure (the deduplication key).

Definition (version 1) — SHA-256 over the concatenation of:

1. the tag ``b"pesflow-structure-v1"``;
2. the number of atoms N as int64;
3. the atomic numbers in the given atom order, int64 (N,);
4. the periodic flags, uint8 (3,);
5. the cell, 3x3 row vectors in Å, rounded to integer multiples of ``QUANTUM`` = 1e-8 Å
   (``numpy.rint(x * 1e8)`` as int64, C order);
6. the Cartesian positions in Å, rounded in the same way, (N, 3), C order;
7. only for a structure with a physical state (:func:`structure_checks.state.physical_state`:
   constraints, initial magnetic moments and charges, tags): ``b"|state|"`` and the state's
   canonical JSON (sorted keys, no spaces, UTF-8). A structure without one hashes exactly as
   before this item existed, so stored hashes stay valid; an antiferromagnetic and a
   ferromagnetic copy of one geometry hash differently. Floats in the state (moments,
   charges) enter as integer multiples of ``QUANTUM``, like positions.

Positions are hashed **as given**: no wrapping into the cell, no sorting. Atom order is part of
the identity (per-atom forces of a label refer to it), and a periodic image of a structure is a
different row. The quantum is the precision of extended XYZ files (ASE writes positions with
8 decimals, correctly rounded), so re-importing an exported dataset finds the stored rows again:
the float read back rounds to the same integer unless the original coordinate lay within about
one float64 ulp of a rounding midpoint (probability ~1e-7 per coordinate). Coordinates that
differ by less than the quantum usually, but not always, hash equal. The hash is a dedup key for
*identical* frames, not a similarity measure. Output: 64 lowercase hex characters.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

SCALE = 10**8  # quanta per Å
QUANTUM = 1.0 / SCALE  # Å
_TAG = b"pesflow-structure-v1"


def _quantize(values: np.ndarray) -> bytes:
    q = np.rint(np.asarray(values, dtype=np.float64) * SCALE).astype("<i8")
    return np.ascontiguousarray(q).tobytes()


def _quantized(value: Any) -> Any:
    """Floats as integer multiples of ``QUANTUM`` (moments and charges hash like positions:
    an extxyz round trip with 8 decimals finds the same row)."""
    if isinstance(value, dict):
        return {k: _quantized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_quantized(v) for v in value]
    if isinstance(value, float):
        return int(np.rint(value * SCALE))
    return value


def structure_hash(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    state: dict[str, Any] | None = None,
) -> str:
    """Return the canonical content hash (hex SHA-256) of a structure; see module docstring."""
    numbers = np.asarray(numbers, dtype="<i8")
    h = hashlib.sha256(_TAG)
    h.update(np.int64(len(numbers)).astype("<i8").tobytes())
    h.update(np.ascontiguousarray(numbers).tobytes())
    h.update(np.asarray(pbc, dtype=bool).astype(np.uint8).tobytes())
    h.update(_quantize(np.asarray(cell, dtype=np.float64).reshape(3, 3)))
    h.update(_quantize(np.asarray(positions, dtype=np.float64).reshape(-1, 3)))
    if state:
        h.update(b"|state|")
        h.update(json.dumps(_quantized(state), sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def atoms_hash(atoms) -> str:
    """Canonical content hash of an ``ase.Atoms``, its physical state included (see
    :func:`structure_hash`)."""
    from structure_checks.state import physical_state

    return structure_hash(
        atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, physical_state(atoms)
    )
