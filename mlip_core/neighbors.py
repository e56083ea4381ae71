"""Neighbor lists with periodic images (vesin) and the dense padded graph the model consumes.

A structure's pairs ``(i, j, S)`` within the cutoff satisfy
``r_ij = x_j - x_i + S @ cell`` with integer cell shifts ``S`` (so an atom can be its own
periodic image in small cells). The model does not consume the pair list directly: each
atom's neighbors are packed into a dense ``(N, M)`` matrix (``M`` = the most neighbors any
atom has), padded slots masked out. Dense gathers and batched matmuls are ~10x faster on CPU
than scatter/index_add for the double backward of force training.

Batches concatenate structures of different sizes: atom indices are global, ``batch[i]``
names the structure of atom ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from numpy.typing import NDArray
from vesin import NeighborList

from structure_checks import cell_problem, neighbor_box

__all__ = ["AtomicGraph", "build_graph", "concat_graphs", "neighbor_pairs"]


def neighbor_pairs(
    atoms: Atoms, cutoff: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Full neighbor list of one structure within ``cutoff`` (Å), periodic images included.

    Returns:
        ``(i, j, S, d)``: pair indices, integer cell shifts ``(P, 3)`` and distances ``(P,)``,
        sorted by ``i``. Each unordered pair appears twice (i->j and j->i).
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    problem = cell_problem(cell, pbc)
    if problem is not None:
        raise ValueError(problem)
    # vesin needs a box for every direction: a zero non-periodic vector (ASE's slabs) gets an
    # orthogonal unit one that is never used for images
    cell = neighbor_box(cell, pbc)
    nl = NeighborList(cutoff=cutoff, full_list=True, sorted=True)
    i, j, s, d = nl.compute(points=positions, box=cell, periodic=pbc, quantities="ijSd")
    return (
        i.astype(np.int64),
        j.astype(np.int64),
        s.astype(np.int64),
        d.astype(np.float64),
    )


@dataclass
class AtomicGraph:
    """A batch of structures in the dense padded neighbor layout.

    Attributes:
        positions: ``(N, 3)`` Cartesian positions, Å (all structures concatenated).
        species: ``(N,)`` indices into the model's species list.
        numbers: ``(N,)`` atomic numbers.
        batch: ``(N,)`` structure index of each atom.
        cell: ``(B, 3, 3)`` cells, Å (rows are lattice vectors).
        volume: ``(B,)`` cell volumes, Å^3 (0 for non-periodic structures).
        neighbors: ``(N, M)`` global index of each neighbor slot (padding points at the atom itself).
        shifts: ``(N, M, 3)`` Cartesian shift ``S @ cell`` of each neighbor slot, Å.
        mask: ``(N, M)`` True for real neighbors.
        n_atoms: ``(B,)`` atoms per structure.
    """

    positions: torch.Tensor
    species: torch.Tensor
    numbers: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    volume: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor
    mask: torch.Tensor
    n_atoms: torch.Tensor

    @property
    def n_structures(self) -> int:
        """Number of structures B in the batch."""
        return int(self.n_atoms.shape[0])

    @property
    def max_neighbors(self) -> int:
        """Width M of the padded neighbor matrix."""
        return int(self.neighbors.shape[1])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> AtomicGraph:
        """Copy to a device and/or floating dtype (integer tensors keep their dtype)."""

        def conv(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return AtomicGraph(**{k: conv(v) for k, v in self.__dict__.items()})


def _dense_layout(
    i: NDArray[np.int64], n_atoms: int, pad_to: int | None
) -> tuple[NDArray[np.int64], int]:
    """Slot of each pair in its atom's row, and the padded width M."""
    counts = np.bincount(i, minlength=n_atoms)
    width = int(counts.max()) if counts.size and counts.max() > 0 else 1
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is smaller than the largest neighbor count {width}")
        width = pad_to
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(i.shape[0]) - starts[i]
    return slot, width


def build_graph(
    structures: Atoms | Sequence[Atoms],
    cutoff: float,
    species_index: dict[int, int],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    pad_to: int | None = None,
) -> AtomicGraph:
    """Build the dense padded graph of one structure or a batch of structures.

    Args:
        structures: an ASE ``Atoms`` or a sequence of them (any sizes, periodic or not).
        cutoff: interaction cutoff, Å.
        species_index: map atomic number -> species index of the model.
        dtype: floating dtype of positions/cells.
        device: torch device.
        pad_to: force the neighbor width M (must be >= the largest neighbor count); results
            do not depend on it, which a test checks.

    Raises:
        ValueError: for an element missing from ``species_index`` (names the element).
    """
    if isinstance(structures, Atoms):
        structures = [structures]
    if len(structures) == 0:
        raise ValueError("cannot build a graph of zero structures")
    pos_l, num_l, batch_l, cell_l, vol_l, nat_l = [], [], [], [], [], []
    ii_l, jj_l, sh_l = [], [], []
    offset = 0
    for b, atoms in enumerate(structures):
        n = len(atoms)
        numbers = atoms.numbers.astype(np.int64)
        i, j, s, _ = neighbor_pairs(atoms, cutoff)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pos_l.append(np.asarray(atoms.positions, dtype=np.float64))
        num_l.append(numbers)
        batch_l.append(np.full(n, b, dtype=np.int64))
        cell_l.append(cell)
        vol_l.append(abs(np.linalg.det(cell)) if np.asarray(atoms.pbc).any() else 0.0)
        nat_l.append(n)
        ii_l.append(i + offset)
        jj_l.append(j + offset)
        sh_l.append(s.astype(np.float64) @ cell)
        offset += n
    numbers = np.concatenate(num_l)
    unknown = sorted(set(numbers.tolist()) - set(species_index))
    if unknown:
        from ase.data import chemical_symbols

        names = ", ".join(chemical_symbols[z] for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in sorted(species_index))
        raise ValueError(f"element(s) {names} not among the model's species ({known})")
    i = np.concatenate(ii_l)
    j = np.concatenate(jj_l)
    shifts = np.concatenate(sh_l)
    n_total = offset
    slot, width = _dense_layout(i, n_total, pad_to)
    neighbors = np.tile(np.arange(n_total)[:, None], (1, width))
    neighbors[i, slot] = j
    dense_shifts = np.zeros((n_total, width, 3))
    dense_shifts[i, slot] = shifts
    mask = np.zeros((n_total, width), dtype=bool)
    mask[i, slot] = True
    lut = np.zeros(max(species_index) + 1, dtype=np.int64)
    for z, k in species_index.items():
        lut[z] = k

    def t(a: np.ndarray, dt: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dt, device=device)

    return AtomicGraph(
        positions=t(np.concatenate(pos_l), dtype),
        species=t(lut[numbers]),
        numbers=t(numbers),
        batch=t(np.concatenate(batch_l)),
        cell=t(np.stack(cell_l), dtype),
        volume=t(np.asarray(vol_l), dtype),
        neighbors=t(neighbors),
        shifts=t(dense_shifts, dtype),
        mask=t(mask),
        n_atoms=t(np.asarray(nat_l, dtype=np.int64)),
    )


def concat_graphs(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
    """Concatenate prebuilt graphs into one batch (neighbor width padded to the widest).

    Building each structure's graph once and concatenating per mini-batch is how training
    avoids recomputing neighbor lists every epoch.
    """
    if not graphs:
        raise ValueError("cannot concatenate zero graphs")
    if len(graphs) == 1:
        return graphs[0]
    width = max(g.max_neighbors for g in graphs)
    pos, spc, num, bat, cell, vol, nbr, sh, msk, nat = ([] for _ in range(10))
    atom_off = struct_off = 0
    for g in graphs:
        n, m = g.neighbors.shape
        pad = width - m
        self_idx = torch.arange(n, device=g.neighbors.device).unsqueeze(1).expand(n, pad)
        nbr.append(torch.cat([g.neighbors, self_idx], dim=1) + atom_off)
        sh.append(torch.nn.functional.pad(g.shifts, (0, 0, 0, pad)))
        msk.append(torch.nn.functional.pad(g.mask, (0, pad)))
        pos.append(g.positions)
        spc.append(g.species)
        num.append(g.numbers)
        bat.append(g.batch + struct_off)
        cell.append(g.cell)
        vol.append(g.volume)
        nat.append(g.n_atoms)
        atom_off += n
        struct_off += g.n_structures
    return AtomicGraph(
        positions=torch.cat(pos),
        species=torch.cat(spc),
        numbers=torch.cat(num),
        batch=torch.cat(bat),
        cell=torch.cat(cell),
        volume=torch.cat(vol),
        neighbors=torch.cat(nbr),
        shifts=torch.cat(sh),
        mask=torch.cat(msk),
        n_atoms=torch.cat(nat),
    )
