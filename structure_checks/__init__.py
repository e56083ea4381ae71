"""One rule for what makes a cell valid, used by every package (numpy only, no pesflow imports).

A structure's periodic cell vectors (the rows of ``cell`` where ``pbc`` is true) must be
finite, non-zero and linearly independent; a non-periodic vector may be anything, zero
included (ASE's slabs: ``ase.build.fcc111(...)`` has a zero third vector with
``pbc=(True, True, False)``). Where a neighbor list needs a full box, each zero non-periodic
vector is replaced by a unit vector orthogonal to the others (:func:`neighbor_box`); it is never
used for periodic images, so energies and forces do not depend on it.

Used by the committee calculator, the walkers and training (:mod:`mlip_core`), the labelers'
pre-flight (:mod:`dft_adapters`), the store (:mod:`database`) and config validation
(:mod:`workflows`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MIN_SINGULAR_VALUE", "cell_problem", "neighbor_box"]

MIN_SINGULAR_VALUE = 1e-6
"""Å: periodic vectors whose smallest singular value is below this are zero or dependent."""


def cell_problem(cell: Any, pbc: Any) -> str | None:
    """A one-line description of what is wrong with ``cell`` ``(3, 3)`` (rows are vectors, Å)
    under ``pbc`` ``(3,)``, or ``None`` when it is valid."""
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not np.isfinite(cell).all():
        return "cell contains NaN or infinite values"
    periodic = cell[pbc]
    if len(periodic) == 0:
        return None
    smallest = float(np.linalg.svd(periodic, compute_uv=False).min())
    if smallest < MIN_SINGULAR_VALUE:
        axes = np.nonzero(pbc)[0].tolist()
        return (
            f"degenerate cell: the periodic vectors (axes {axes}) are zero or linearly dependent "
            f"(smallest singular value {smallest:.3g} Å)"
        )
    return None


def neighbor_box(cell: Any, pbc: Any) -> np.ndarray:
    """``cell`` with every zero (< 1e-9 Å) non-periodic vector replaced by a unit vector
    orthogonal to the remaining ones (an orthonormal completion by SVD), so that neighbor-list
    codes that need a full box accept it. Periodic vectors are never changed."""
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    zero = [ax for ax in range(3) if not pbc[ax] and np.linalg.norm(box[ax]) < 1e-9]
    if not zero:
        return box
    kept = np.array([box[ax] for ax in range(3) if ax not in zero]).reshape(-1, 3)
    if len(kept):
        _, _, vt = np.linalg.svd(kept)
        complement = vt[np.linalg.matrix_rank(kept) :]
    else:
        complement = np.eye(3)
    for ax, vec in zip(zero, complement, strict=False):
        box[ax] = vec
    return box
