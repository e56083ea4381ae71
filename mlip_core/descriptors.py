"""Structure descriptors for diversity-aware candidate selection.

:func:`structure_descriptor` turns a configuration into a fixed-length vector that

- sees geometry: Gaussian-smeared pair-distance histograms per species pair (2-body) and
  Gaussian-smeared bond-angle histograms ``cos(theta_jik)`` per centre species (3-body);
- is invariant to translation, rotation and permutation of same-species atoms (it is
  built from distances and angles only, summed over atoms);
- is size-intensive: every block is summed over atoms and divided by the atom count, so
  a supercell of a structure has the same descriptor as the structure;
- is smooth: contributions fade to zero at the cutoffs (cosine cutoff function), so the
  descriptor does not jump when a neighbour crosses a cutoff.

It is meant for farthest-point sampling and near-duplicate detection (Euclidean
distances between descriptors), not as a model input. Periodic images are handled with
``vesin`` neighbour lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations_with_replacement

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from numpy.typing import NDArray
from vesin import NeighborList

__all__ = [
    "DescriptorError",
    "descriptor_matrix",
    "structure_descriptor",
]


class DescriptorError(ValueError):
    """Bad input to a descriptor function (names the problem)."""


def _cosine_cutoff(r: NDArray[np.float64], r_cut: float) -> NDArray[np.float64]:
    return np.where(r < r_cut, 0.5 * (np.cos(np.pi * r / r_cut) + 1.0), 0.0)


def _neighbors(
    atoms: Atoms, cutoff: float, full: bool
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Neighbour pairs with distance vectors: full (both directions, sorted by i) or half."""
    nl = NeighborList(cutoff=float(cutoff), full_list=full, sorted=full)
    i, j, vec = nl.compute(
        points=np.asarray(atoms.positions, dtype=np.float64),
        box=np.asarray(atoms.cell[:], dtype=np.float64),
        periodic=np.asarray(atoms.pbc, dtype=bool),
        quantities="ijD",
    )
    return i.astype(np.intp), j.astype(np.intp), vec


def _check_species(numbers: NDArray[np.int_], species: Sequence[int]) -> None:
    unknown = sorted(set(numbers.tolist()) - set(species))
    if unknown:
        names = [chemical_symbols[z] for z in unknown]
        raise DescriptorError(
            f"structure contains element(s) {names} not in the descriptor species "
            f"{[chemical_symbols[z] for z in species]}"
        )


def structure_descriptor(
    atoms: Atoms,
    species: Sequence[int] | None = None,
    *,
    r_cut: float = 5.0,
    r_cut_angular: float = 3.5,
    n_radial: int = 24,
    n_angular: int = 12,
    r_min: float = 0.5,
) -> NDArray[np.float64]:
    """Fixed-length, invariant, size-intensive descriptor of one structure.

    Args:
        atoms: the configuration (periodic or not).
        species: atomic numbers that define the block layout; frames compared with each
            other must use the same list (see :func:`descriptor_matrix`). Default: the
            elements present in ``atoms``.
        r_cut: radial cutoff, Å.
        r_cut_angular: cutoff of the neighbours forming bond angles, Å.
        n_radial: Gaussians per species pair, centred on ``linspace(r_min, r_cut)``.
        n_angular: Gaussians per centre species, centred on ``linspace(-1, 1)`` in cos(theta).
        r_min: first radial centre, Å.

    Returns:
        Vector of length ``P * n_radial + S * n_angular`` with ``S`` species and
        ``P = S (S + 1) / 2`` species pairs: the radial blocks for pairs in
        ``combinations_with_replacement(sorted(species), 2)`` order, then the angular
        blocks in ``sorted(species)`` order.
    """
    n_atoms = len(atoms)
    if n_atoms == 0:
        raise DescriptorError("cannot describe a structure with no atoms")
    if not (0 < r_cut_angular <= r_cut):
        raise DescriptorError(
            f"need 0 < r_cut_angular <= r_cut, got r_cut_angular={r_cut_angular}, r_cut={r_cut}"
        )
    if n_radial < 2 or n_angular < 2:
        raise DescriptorError(f"need n_radial, n_angular >= 2, got {n_radial}, {n_angular}")
    if not np.all(np.isfinite(atoms.positions)):
        raise DescriptorError("structure has NaN/inf positions")
    numbers = np.asarray(atoms.numbers)
    spec = sorted(set(numbers.tolist())) if species is None else sorted(set(species))
    _check_species(numbers, spec)
    s_index = np.full(max(spec) + 1, -1, dtype=np.intp)
    s_index[spec] = np.arange(len(spec))
    n_spec = len(spec)
    pairs = list(combinations_with_replacement(range(n_spec), 2))
    pair_index = np.full((n_spec, n_spec), -1, dtype=np.intp)
    for p, (a, b) in enumerate(pairs):
        pair_index[a, b] = pair_index[b, a] = p
    atom_spec = s_index[numbers]

    # ---- 2-body: sum over ordered pairs of fc(r) * G(r - mu) per species pair
    # (= twice the sum over the half list: each unordered pair once)
    i, j, vec = _neighbors(atoms, r_cut, full=False)
    r = np.linalg.norm(vec, axis=1)
    mu = np.linspace(r_min, r_cut, n_radial)
    width = mu[1] - mu[0]
    g = np.exp(-0.5 * ((r[:, None] - mu[None, :]) / width) ** 2) * _cosine_cutoff(r, r_cut)[:, None]
    ptype = pair_index[atom_spec[i], atom_spec[j]]
    onehot = np.zeros((r.size, len(pairs)))
    onehot[np.arange(r.size), ptype] = 1.0
    radial = 2.0 * (onehot.T @ g)

    # ---- 3-body: per centre, all neighbour pairs j < k within r_cut_angular
    angular = np.zeros((n_spec, n_angular))
    ia, _, va = _neighbors(atoms, r_cut_angular, full=True)
    ra = np.linalg.norm(va, axis=1)
    if ia.size:
        counts = np.bincount(ia, minlength=n_atoms)
        m = int(counts.max())
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        slot = np.arange(ia.size) - starts[ia]  # i is sorted, so slots are contiguous
        unit = np.zeros((n_atoms, m, 3))
        weight = np.zeros((n_atoms, m))
        unit[ia, slot] = va / ra[:, None]
        weight[ia, slot] = _cosine_cutoff(ra, r_cut_angular)
        ju, ku = np.triu_indices(m, k=1)
        cos = np.einsum("nax,nax->na", unit[:, ju], unit[:, ku])  # (N, m(m-1)/2)
        w = weight[:, ju] * weight[:, ku]
        c = np.linspace(-1.0, 1.0, n_angular)
        cw = c[1] - c[0]
        h = np.exp(-0.5 * ((cos[..., None] - c) / cw) ** 2) * w[..., None]  # (N, T, n_angular)
        per_atom = h.sum(axis=1)  # (N, n_angular)
        np.add.at(angular, atom_spec, per_atom)

    return np.concatenate([radial.ravel(), angular.ravel()]) / n_atoms


def descriptor_matrix(
    frames: Sequence[Atoms],
    species: Sequence[int] | None = None,
    **kwargs: float,
) -> NDArray[np.float64]:
    """Descriptors of many frames with one shared block layout, shape ``(n_frames, D)``.

    ``species`` defaults to the union of the elements in all frames; ``kwargs`` are passed
    to :func:`structure_descriptor`.
    """
    if len(frames) == 0:
        raise DescriptorError("no frames to describe")
    if species is None:
        species = sorted({int(z) for a in frames for z in a.numbers})
    return np.stack([structure_descriptor(a, species, **kwargs) for a in frames])  # type: ignore[arg-type]
