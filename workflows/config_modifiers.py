"""Structure modifiers of a ``structures`` entry: point defects, random alloys, strained cells.

They apply to any source (``generate``, ``file`` or ``content``), to every frame, in this
order, each copy drawn from the campaign seed (:func:`apply_modifiers`):

0. ``slab: {miller: [1, 1, 1], layers: 4, vacuum: 8}`` (file / content sources; ``generate``
   has its own ``surface``): the frame, a fully periodic bulk cell, cut into a slab by
   ``ase.build.surface`` (moments and charges follow the atoms; constraints are refused);
1. ``substitute: {Au: 0.25}``: that fraction of all atoms becomes Au (exact counts, sites drawn
   among the atoms of other elements than those substituted in);
2. ``vacancies: N``: N atoms removed (drawn among the atoms no ``FixAtoms`` holds);
3. ``interstitials: N``: N atoms of ``interstitial_element`` (default: the frame's most common
   element) put one by one at the largest empty site: the point of a grid over the cell
   (inside the atoms' extent along non-periodic directions) farthest from every atom,
   periodic images included, refined on a finer grid (octahedral sites in fcc);
4. ``strain: [-0.02, 0.02, [0, 0, 0, 0, 0, 0.03]]``: one copy per entry; a number is an
   isotropic strain (in-plane only for a slab: only periodic cell vectors are scaled), a
   6-vector a Voigt strain (xx, yy, zz, yz, xz, xy, engineering shears: the yz tensor component
   is half the 4th entry) of a fully periodic frame: cell -> cell (I + eps), atoms follow.

``copies: k`` draws k different defect / alloy copies of each frame. Each modifier adds to the
source's regime name (``-alloy``, ``-vacancy``, ``-interstitial``, ``-strained``) unless the
user named the regime. Constraints, initial moments and charges follow the atoms that stay;
where a new or changed atom's state is unknown (a moment or charge on a substituted site, on
an inserted atom among atoms of different moments or with charges, a constraint other than
``FixAtoms`` under a vacancy) the source is refused with a message, never guessed.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from pydantic import Field, field_validator, model_validator

from .config_base import _Section, omit_null

__all__ = ["SourceModifiers", "apply_modifiers", "largest_empty_site"]

Miller = Annotated[int, Field(ge=-10, le=10)]
StrainValue = Annotated[float, Field(ge=-0.2, le=0.2, allow_inf_nan=False)]
Voigt = tuple[StrainValue, StrainValue, StrainValue, StrainValue, StrainValue, StrainValue]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class SlabCut(_Section):
    """A surface slab cut from a bulk frame (``ase.build.surface``)."""

    miller: tuple[Miller, Miller, Miller] = Field(description="Miller indices of the surface.")
    layers: int = Field(default=4, ge=1, le=100, description="Layers of the slab.")
    vacuum: float = Field(default=8.0, gt=0, le=100, description="Vacuum on each side, Å.")

    @model_validator(mode="after")
    def _plane(self) -> SlabCut:
        if not any(self.miller):
            raise ValueError("miller: (0, 0, 0) names no plane")
        return self


_SYMBOLS = tuple(z for z in chemical_symbols[1:])
"""Element symbols a modifier may name (H to Og)."""


class SourceModifiers(_Section):
    """The modifier keys of a structure source (see the module docstring)."""

    slab: SlabCut | None = Field(
        default=None,
        json_schema_extra=omit_null,
        description="Cut each (bulk) frame of a file or content into a surface slab.",
    )
    vacancies: int = Field(default=0, ge=0, description="Atoms removed from each frame.")
    interstitials: int = Field(
        default=0, ge=0, description="Atoms put at the largest empty sites of each frame."
    )
    interstitial_element: str | None = Field(
        default=None,
        json_schema_extra=lambda s: (omit_null(s), s.update(enum=list(_SYMBOLS))),
        description="Element of the interstitials (default: the frame's most common element).",
    )
    substitute: dict[str, Fraction] | None = Field(
        default=None,
        json_schema_extra=lambda s: (
            omit_null(s),
            s.update(propertyNames={"enum": list(_SYMBOLS)}, minProperties=1),
        ),
        description="Random alloy: fraction of all atoms each element replaces, e.g. {Au: 0.25} "
        "(each fraction x atoms must be a whole number).",
    )
    strain: list[StrainValue | Voigt] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        json_schema_extra=omit_null,
        description="One strained copy per entry: a number (isotropic strain, a fraction, not "
        "%; in-plane for slabs) or a Voigt 6-vector (xx, yy, zz, yz, xz, xy; engineering "
        "shears) for fully periodic frames; each |entry| <= 0.2.",
    )
    copies: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Different random copies (vacancies, interstitials, substitute) per frame.",
    )

    @field_validator("interstitial_element")
    @classmethod
    def _element(cls, v: str | None) -> str | None:
        if v is not None and v not in atomic_numbers:
            raise ValueError(f"unknown chemical symbol {v!r}")
        return v

    @field_validator("substitute")
    @classmethod
    def _alloy(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one element, e.g. {Au: 0.25}")
        for el in v:
            if el not in atomic_numbers or el == "X":
                raise ValueError(f"unknown chemical symbol {el!r}")
        if sum(v.values()) > 1 + 1e-9:
            raise ValueError(f"fractions add up to {sum(v.values()):g}, more than 1")
        return v

    @model_validator(mode="after")
    def _copies(self) -> SourceModifiers:
        if self.copies > 1 and not (self.vacancies or self.interstitials or self.substitute):
            raise ValueError(
                f"copies={self.copies} without vacancies, interstitials or substitute would "
                "give identical structures"
            )
        if self.interstitial_element is not None and not self.interstitials:
            raise ValueError("interstitial_element without interstitials")
        return self

    def modifier_suffix(self) -> str:
        """What the modifiers add to a derived regime name (``-vacancy``, ...)."""
        out = "-surface-" + "".join(map(str, self.slab.miller)) if self.slab else ""
        out += "-alloy" if self.substitute else ""
        out += "-vacancy" if self.vacancies else ""
        out += "-interstitial" if self.interstitials else ""
        return out + ("-strained" if self.strain else "")

    def modified(self) -> bool:
        """True when any modifier is set."""
        return bool(self.modifier_suffix())

    def check_counts(self, n: int) -> None:
        """``ValueError`` (its message starts with the key) when a frame of ``n`` atoms
        cannot take the counts asked for."""
        if self.substitute:
            _substitution_counts(self.substitute, n)
        if self.vacancies and self.vacancies >= n:
            raise ValueError(
                f"vacancies: {self.vacancies} of a frame of {n} atoms would leave "
                f"{'none' if self.vacancies == n else 'fewer than none'}; at most {n - 1}"
            )


def _substitution_counts(fractions: dict[str, float], n: int) -> dict[str, int]:
    counts = {}
    for el, f in fractions.items():
        exact = f * n
        k = round(exact)
        if abs(exact - k) > 1e-6:
            lo, hi = int(np.floor(exact)), int(np.ceil(exact))
            raise ValueError(
                f"substitute.{el}: {f:g} of {n} atoms is {exact:.4g} atoms, not a whole number; "
                f"use {lo / n:.6g} ({lo} atoms) or {hi / n:.6g} ({hi} atoms)"
            )
        counts[el] = k
    return counts


def apply_modifiers(
    frames: list[Atoms], mods: SourceModifiers, rng: np.random.Generator, guard: Any = None
) -> list:
    """The modified structures of ``frames`` (new ``Atoms``; see the module docstring): per
    frame, ``copies`` defect / alloy copies, each in every ``strain`` (or unstrained). An
    interstitial site closer to an atom than ``guard`` allows (a
    :class:`mlip_core.monitor.DistanceGuard`, the exploration's; default or switched off: the
    default relative guard) means the cell is too small. Raises ``ValueError`` starting with
    the key (``vacancies: ...``) when a frame cannot take them."""
    if not mods.modified():
        return frames
    out = []
    for k, atoms in enumerate(frames):
        where = f" (frame {k})" if len(frames) > 1 else ""
        try:
            atoms = _slab(atoms, mods.slab) if mods.slab else atoms
            mods.check_counts(len(atoms))
        except ValueError as exc:
            raise ValueError(f"{exc}{where}") from None
        for _ in range(mods.copies):
            a = atoms.copy()
            try:
                if mods.substitute:
                    _substitute(a, mods.substitute, rng)
                if mods.vacancies:
                    a = _vacancies(a, mods.vacancies, rng)
                if mods.interstitials:
                    _interstitials(a, mods, rng, atoms, guard)
                out += _strained(a, mods.strain) if mods.strain else [a]
            except ValueError as exc:
                raise ValueError(f"{exc}{where}") from None
    return out


def _substitute(a: Atoms, fractions: dict[str, float], rng: np.random.Generator) -> None:
    counts = _substitution_counts(fractions, len(a))
    new = [atomic_numbers[el] for el in counts]
    free = np.flatnonzero(~np.isin(a.numbers, new))
    need = sum(counts.values())
    if need > free.size:
        raise ValueError(
            f"substitute: {need} sites asked for, only {free.size} atoms of other elements"
        )
    picks = rng.permutation(free)[:need]
    for name in ("initial_magmoms", "initial_charges"):
        if a.has(name) and np.any(np.asarray(a.get_array(name))[picks] != 0):
            raise ValueError(
                f"substitute: the frame has {name.replace('_', ' ')} on the sites drawn; a "
                "substituted atom's value is unknown: give the alloy as a structure file"
            )
    start = 0
    numbers = a.numbers.copy()
    for el, n in counts.items():
        numbers[picks[start : start + n]] = atomic_numbers[el]
        start += n
    a.numbers = numbers
    if a.has("masses"):  # explicit masses follow the element
        masses = a.get_masses()
        masses[picks] = atomic_masses[numbers[picks]]
        a.set_masses(masses)


def _slab(a: Atoms, cut: SlabCut) -> Atoms:
    from ase.build import surface

    if not a.pbc.all():
        raise ValueError("slab: the frame is not a fully periodic bulk cell")
    if a.constraints:
        raise ValueError("slab: the frame has constraints, which a cut cannot carry")
    try:
        with np.errstate(all="ignore"):
            out = surface(a, cut.miller, cut.layers, vacuum=cut.vacuum)
    except Exception as exc:
        raise ValueError(f"slab: ASE cannot cut it: {type(exc).__name__}: {exc}") from None
    out.pbc = (True, True, False)
    return out


def _fixed(a: Atoms) -> np.ndarray:
    from ase.constraints import FixAtoms

    held = np.zeros(len(a), bool)
    for c in a.constraints:
        if not isinstance(c, FixAtoms):
            raise ValueError(
                f"vacancies: the frame has a {type(c).__name__} constraint, which ASE cannot "
                "carry through removing atoms; only FixAtoms can be"
            )
        held[c.get_indices()] = True
    return held


def _vacancies(a: Atoms, n: int, rng: np.random.Generator) -> Atoms:
    free = np.flatnonzero(~_fixed(a))
    if n > free.size:
        raise ValueError(f"vacancies: {n} asked for, only {free.size} atoms are not fixed")
    picks = np.sort(rng.permutation(free)[:n])
    del a[picks]  # FixAtoms indices are renumbered by ASE
    return a


def largest_empty_site(
    atoms: Atoms, rng: np.random.Generator | None = None, spacing: float = 0.25
) -> tuple[np.ndarray, float, int]:
    """The point of the cell farthest from every atom (periodic images included; along a
    non-periodic direction only within the atoms' extent): ``(position Å (3,), distance Å,
    index of the nearest atom)``. Among points within 0.05 Å of the best, ``rng`` draws one
    (default: the first). Grid search (``spacing`` Å, coarser for big cells), refined on a
    grid (and then one 5x finer still) around the pick."""
    from scipy.spatial import cKDTree

    cell = np.asarray(atoms.cell.array, float)
    if abs(np.linalg.det(cell)) < 1e-9:
        raise ValueError("interstitials: the frame has no cell to find empty sites in")
    pbc = np.asarray(atoms.pbc, bool)
    frac = np.linalg.solve(cell.T, atoms.positions.T).T
    frac[:, pbc] %= 1.0
    spacing = max(spacing, (abs(np.linalg.det(cell)) / 2e6) ** (1 / 3))
    shifts = np.array(np.meshgrid(*[[-1, 0, 1] if p else [0] for p in pbc])).reshape(3, -1).T
    images = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3) @ cell
    tree = cKDTree(images)

    def axis(k: int, lo: float, hi: float, step: float) -> np.ndarray:
        n = max(2, int(np.ceil((hi - lo) * np.linalg.norm(cell[k]) / step)))
        return np.linspace(lo, hi, n, endpoint=not pbc[k])

    span = [(0.0, 1.0) if p else (frac[:, k].min(), frac[:, k].max()) for k, p in enumerate(pbc)]
    grid = np.stack(np.meshgrid(*[axis(k, *span[k], spacing) for k in range(3)]), -1)
    points = grid.reshape(-1, 3) @ cell
    d, _ = tree.query(points)
    best = np.flatnonzero(d >= d.max() - 0.05)
    pick = points[best[int(rng.integers(best.size)) if rng is not None else 0]]
    lo, hi = np.array([s[0] for s in span]) - 1e-9, np.array([s[1] for s in span]) + 1e-9
    for step in (spacing, spacing / 5):  # two finer grids around the pick
        fine = np.linspace(-step, step, 11)
        local = pick + np.stack(np.meshgrid(fine, fine, fine), -1).reshape(-1, 3)
        inside = np.linalg.solve(cell.T, local.T).T
        ok = np.all(((inside >= lo) & (inside <= hi)) | pbc, axis=1)
        d, _ = tree.query(local[ok])
        pick = local[ok][int(np.argmax(d))] if ok.any() else pick
    d, j = tree.query(pick)
    return pick, float(d), int(j) % len(atoms)


def _interstitials(
    a: Atoms, mods: SourceModifiers, rng: np.random.Generator, host: Atoms, guard: Any
) -> None:
    from mlip_core.monitor import DistanceGuard

    symbol = mods.interstitial_element
    if symbol is None:
        values, counts = np.unique(host.numbers, return_counts=True)
        symbol = chemical_symbols[int(values[np.argmax(counts)])]
    z = atomic_numbers[symbol]
    state: dict[str, Any] = {}
    same = a.numbers == z
    if a.has("initial_charges") and np.any(a.get_initial_charges() != 0):
        raise ValueError(
            "interstitials: the frame has initial charges; an inserted atom's charge is "
            "unknown: give the defect as a structure file"
        )
    if a.has("initial_magmoms"):
        moments = np.asarray(a.get_initial_magnetic_moments())
        ref = moments[same] if same.any() else moments
        if np.any(moments != 0):
            if not np.allclose(ref, ref[0]):
                raise ValueError(
                    f"interstitials: the {symbol} atoms of the frame have different initial "
                    "magnetic moments; an inserted atom's moment is unknown: give the defect "
                    "as a structure file"
                )
            state["magmoms"] = [ref[0]]
    guard = DistanceGuard() if guard is None or guard.off else guard
    for n in range(mods.interstitials):
        site, d, j = largest_empty_site(a, rng)
        limit = guard.limit(z, int(a.numbers[j]))
        if d < limit:
            raise ValueError(
                f"interstitials: the largest empty site left for interstitial {n + 1} of "
                f"{mods.interstitials} is {d:.2f} Å from atom {j} "
                f"({chemical_symbols[a.numbers[j]]}), under {limit:.2f} Å "
                f"({guard.describe()}): the cell is too small; repeat it"
            )
        new = Atoms(symbol, positions=[site], **state)
        if a.has("masses"):
            new.set_masses([atomic_masses[z]])
        a.extend(new)


def _strained(a: Atoms, strains: list[Any]) -> list[Atoms]:
    cell = np.asarray(a.cell.array, float)
    if abs(np.linalg.det(cell)) < 1e-9:
        raise ValueError("strain: the frame has no cell to strain")
    out = []
    for s in strains:
        b = a.copy()
        if isinstance(s, float | int):
            scale = np.where(b.pbc, 1.0 + float(s), 1.0)
            b.set_cell(cell * scale[:, None], scale_atoms=True)
        else:
            if not b.pbc.all():
                raise ValueError(
                    f"strain: a Voigt strain {list(s)} needs a fully periodic frame; a slab "
                    "takes isotropic (in-plane) strains"
                )
            xx, yy, zz, yz, xz, xy = s
            eps = np.array([[xx, xy / 2, xz / 2], [xy / 2, yy, yz / 2], [xz / 2, yz / 2, zz]])
            b.set_cell(cell @ (np.eye(3) + eps), scale_atoms=True)
        out.append(b)
    return out
