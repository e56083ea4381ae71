"""Structure text -> checked ``ase.Atoms``: the parsers behind :mod:`workflows.structure_files`.

Text is parsed by ASE inside a fresh temporary directory after cheap checks that it can hold
the atoms it claims (ASE allocates what a count line says before reading it); a CIF is parsed
once (:func:`read_cif`: structures, site labels, a bound on its symmetry expansion). Every
structure read is then checked: one definite composition (:func:`check_definite`) and the
labelers' geometry rule (:func:`check_geometry`); an ASE index picks frames
(:func:`select_frames`) with a message naming what it missed.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "MAX_CIF_ATOMS",
    "MAX_FRAMES",
    "MIN_DISTANCE",
    "check_atom_counts",
    "check_definite",
    "check_geometry",
    "parse_text",
    "read_cif",
    "select_frames",
]

FORMATS: dict[str, str] = {
    "extxyz": "extxyz",
    "xyz": "extxyz",
    "cif": "cif",
    "vasp": "vasp",
    "poscar": "vasp",
}
"""Structure formats a config may give (``format``) -> the ASE format that reads them."""


def _frames(result: Any) -> list:
    frames = result if isinstance(result, list) else [result]
    out = []
    for a in frames:
        b = a.copy()
        b.calc = None
        out.append(b)
    return out


MAX_FRAMES = 10_000
"""Most frames one structure text may hold."""


def _int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def check_atom_counts(text: str, fmt: str) -> None:
    """Refuse atom counts the text cannot hold (``ValueError``): ASE's xyz and POSCAR readers
    allocate what a count line says before reading, so a 50-byte POSCAR claiming 10^9 atoms
    would take minutes and gigabytes. Other problems are left to ASE."""
    lines = text.splitlines()
    if FORMATS[fmt] == "extxyz":
        i, frame = 0, 0
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            count = _int(lines[i].split()[0])
            if count is None:
                return
            if count < 0 or count > len(lines) - i - 2:
                raise ValueError(
                    f"frame {frame} claims {count} atoms but only {max(len(lines) - i - 2, 0)} "
                    "lines follow"
                )
            i, frame = i + count + 2, frame + 1
            if frame > MAX_FRAMES:
                raise ValueError(f"more than {MAX_FRAMES} frames")
    elif FORMATS[fmt] == "vasp" and len(lines) > 6:
        row = lines[5].split()
        counts = [
            _int(t) for t in (row if all(_int(t) is not None for t in row) else lines[6].split())
        ]
        if counts and None not in counts:
            total = sum(c for c in counts if c is not None)
            if total < 0 or total > len(lines):
                raise ValueError(f"POSCAR claims {total} atoms but has only {len(lines)} lines")


MAX_CIF_ATOMS = 20_000
"""Most atoms a CIF block may expand to by its symmetry operations (ASE's expansion is slow:
about 11 s for 37 000 atoms)."""


def read_cif(path: Path) -> tuple[list, list[list[str]]]:
    """The structures of a CIF and the ``_atom_site_label`` list of each, from one parse
    (as ``ase.io.read(path, ":", "cif")`` builds them: conventional cell, occupancies in
    ``info``). A block whose sites times symmetry operations exceed :data:`MAX_CIF_ATOMS` is
    refused (``ValueError``) before ASE expands it."""
    from ase.io.cif import parse_cif

    blocks = [b for b in parse_cif(str(path)) if b.has_structure()]
    for block in blocks:
        n_sites = len(block.get_unsymmetrized_structure())
        try:
            n_ops = block.get_spacegroup(True).nsymop
        except Exception:  # no usable space group: ASE will say so
            n_ops = 1
        if n_sites * n_ops > MAX_CIF_ATOMS:
            raise ValueError(
                f"{n_sites} sites x {n_ops} symmetry operations may expand to more than "
                f"{MAX_CIF_ATOMS} atoms"
            )
    frames = [b.get_atoms(False, False, True, fractional_occupancies=True) for b in blocks]
    return _frames(frames), [list(b.get("_atom_site_label") or []) for b in blocks]


def parse_text(data: str | bytes, fmt: str, index: str = ":", name: str = "content") -> list:
    """Parse structure text in format ``fmt`` (a key of :data:`FORMATS`) inside a fresh
    temporary directory; raises ``ValueError`` (one line, without the temporary path)."""
    import ase.io

    text = data if isinstance(data, str) else data.decode(errors="replace")
    try:
        check_atom_counts(text, fmt)
    except ValueError as exc:
        raise ValueError(f"cannot parse {name} as {fmt}: {exc}") from None

    with tempfile.TemporaryDirectory(prefix="pesflow-structure-") as tmp:
        path = Path(tmp) / f"structure.{FORMATS[fmt]}"
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        try:
            if FORMATS[fmt] == "cif":
                frames, labels = read_cif(path)
            else:
                frames, labels = _frames(ase.io.read(path, ":", FORMATS[fmt])), None
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}".replace(tmp, "<tmp>").rstrip(": ")
            raise ValueError(
                f"cannot parse {name} as {fmt}: {' '.join(text.split())[:300]}"
            ) from None
    if not frames:
        raise ValueError(f"{name} holds no structures")
    picked = select_frames(list(range(len(frames))), index, name)
    chosen = [frames[i] for i in picked]
    _check_frames(chosen, name, [labels[i] for i in picked] if labels else None)
    return chosen


MIN_DISTANCE = 0.5
"""Closest two atoms of an initial structure may be, Å (also the exploration default)."""


def check_geometry(atoms: Any, what: str) -> None:
    """The labelers' geometry rule (:func:`dft_adapters.check_geometry`: finite positions,
    :func:`structure_checks.cell_problem`, no atoms closer than :data:`MIN_DISTANCE`, periodic
    images included) without their volume-per-atom window; ``ValueError`` naming ``what``."""
    from dft_adapters import PreflightLimits
    from dft_adapters import check_geometry as preflight

    problem = preflight(atoms, PreflightLimits(MIN_DISTANCE, 0.0, math.inf))
    if problem is not None:
        raise ValueError(f"{what}: {problem}")


def _check_frames(frames: list, name: str, labels: list[list[str]] | None = None) -> None:
    for k, atoms in enumerate(frames):
        what = f"{name} frame {k}" if len(frames) > 1 else name
        check_definite(atoms, what, labels[k] if labels and k < len(labels) else None)
        check_geometry(atoms, what)


def check_definite(atoms: Any, what: str, site_labels: list[str] | None = None) -> None:
    """Refuse a structure that is not one definite composition: partially occupied or mixed
    sites (a CIF's ``_atom_site_occupancy``, which ASE reads as one species per site and
    drops the rest) and dummy / vacancy species (atomic number 0). ``ValueError`` naming the
    sites."""
    partial = []
    for kind, occ in sorted((atoms.info.get("occupancy") or {}).items(), key=lambda kv: kv[0]):
        if len(occ) > 1 or any(abs(float(v) - 1.0) > 1e-6 for v in occ.values()):
            kinds = np.asarray(atoms.arrays.get("spacegroup_kinds", []))
            where = np.nonzero(kinds == int(kind))[0].tolist() if kinds.size else []
            shares = ", ".join(f"{el} {float(v):g}" for el, v in sorted(occ.items()))
            k = int(kind)
            site = site_labels[k] if site_labels and k < len(site_labels) else f"#{kind}"
            partial.append(f"site {site} ({shares}; atoms {where[:8]})")
    if partial:
        raise ValueError(
            f"{what}: partially occupied or mixed site(s): {'; '.join(partial[:5])}"
            + (" ..." if len(partial) > 5 else "")
            + " — pesflow computes definite structures: order the cell first (e.g. pymatgen's "
            "OrderDisorderedStructureTransformation) and give the ordered structure"
        )
    dummy = np.nonzero(np.asarray(atoms.numbers) == 0)[0].tolist()
    if dummy:
        raise ValueError(f"{what}: dummy or vacancy species (X) at atoms {dummy[:10]}")


def select_frames(frames: list, index: str, name: str = "content") -> list:
    """The frames ``index`` (an ASE index string: ``'0'``, ``'-1'``, ``'1:'``, ``'::2'``)
    selects; ``ValueError`` naming the index and the number of frames when it selects none."""
    from ase.io.formats import string2index

    try:
        sel = string2index(index)
    except ValueError:
        raise ValueError(
            f"index {index!r} is not an ASE index (e.g. ':', '0', '-1', '1::2')"
        ) from None
    n = len(frames)
    if isinstance(sel, int):
        if not -n <= sel < n:
            raise ValueError(f"index {index!r} selects no frame: {name} has {n} frame(s)")
        return [frames[sel]]
    chosen = frames[sel]
    if not chosen:
        raise ValueError(f"index {index!r} selects no frame: {name} has {n} frame(s)")
    return chosen


VACUUM_GAP = 5.0
"""Å: an empty layer this thick along a lattice direction is vacuum, not a crystal."""


def vacuum_gap(atoms: Any) -> tuple[int, float]:
    """(lattice direction, thickness in Å) of the widest empty layer of a periodic cell: the
    largest gap between consecutive fractional coordinates along each direction (wrapped) times
    the cell's width perpendicular to the other two vectors."""
    frac = atoms.get_scaled_positions(wrap=True)
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    best = (0, 0.0)
    for k in range(3):
        x = np.sort(frac[:, k])
        gaps = np.diff(np.concatenate([x, [x[0] + 1.0]]))
        width = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
        gap = float(gaps.max() * width)
        if gap > best[1]:
            best = (k, gap)
    return best
