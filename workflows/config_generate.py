"""``structures[i].generate``: a crystal built by ASE (``ase.build.bulk``), optionally cut into
a surface slab (``ase.build.surface``).

Elemental crystals (:data:`ELEMENTAL_CRYSTALS`) take one ``element``; the binary AB crystals
(:data:`BINARY_CRYSTALS`: zinc blende, rock salt, caesium chloride) take ``elements: [A, B]``,
A on the sublattice at the origin and B on the other one (zinc blende: B at a/4 (1, 1, 1), e.g.
``[Si, C]`` for 3C-SiC; rock salt: B at a/2 (1, 0, 0); caesium chloride: B at a/2 (1, 1, 1)).
Lengths in Å, moments in μB.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

import numpy as np
from ase.data import atomic_numbers, chemical_symbols, reference_states
from pydantic import ConfigDict, Field, field_validator, model_validator

from .config_base import _Section, omit_null
from .structure_text import check_geometry

__all__ = [
    "BINARY_CRYSTALS",
    "CRYSTALS",
    "ELEMENTAL_CRYSTALS",
    "ELEMENTS",
    "MAX_GENERATED_ATOMS",
    "GenerateConfig",
    "reference_crystal",
]

Repeat = Annotated[int, Field(ge=1, le=50)]
Miller = Annotated[int, Field(ge=-10, le=10)]
ELEMENTS = tuple(chemical_symbols[1:])
"""Chemical symbols a generated structure may use (H to Og; ``ase.data.chemical_symbols``)."""

Crystal = Literal["fcc", "bcc", "hcp", "sc", "diamond", "zincblende", "rocksalt", "cesiumchloride"]
CRYSTALS: tuple[str, ...] = typing.get_args(Crystal)
ELEMENTAL_CRYSTALS: tuple[str, ...] = ("fcc", "bcc", "hcp", "sc", "diamond")
"""Crystals of one species (``element``)."""
BINARY_CRYSTALS: tuple[str, ...] = ("zincblende", "rocksalt", "cesiumchloride")
"""AB crystals of two species (``elements: [A, B]``; ASE has no reference lattice constant)."""

MAX_GENERATED_ATOMS = 100_000
"""Most atoms a generated structure may have."""


def reference_crystal(element: str) -> str | None:
    """The crystal (one of :data:`ELEMENTAL_CRYSTALS`) ASE builds ``element`` in without a
    lattice constant (``ase.data.reference_states``), or ``None``."""
    ref = reference_states[atomic_numbers[element]] or {}
    return ref["symmetry"] if ref.get("symmetry") in ELEMENTAL_CRYSTALS else None


def _reference_crystals() -> dict[str, Any]:
    """JSON Schema of ASE's rule: ``lattice_constant`` may be left out only for an element's
    reference crystal (``ase.data.reference_states``; ``crystal`` defaults to fcc)."""
    by_crystal: dict[str, list[str]] = {}
    for element in ELEMENTS:
        crystal = reference_crystal(element)
        if crystal is not None:
            by_crystal.setdefault(crystal, []).append(element)
    branches: list[dict[str, Any]] = [{"required": ["lattice_constant"]}]
    for crystal, elements in sorted(by_crystal.items()):
        branch: dict[str, Any] = {
            "required": ["element"],
            "properties": {"element": {"enum": elements}, "crystal": {"const": crystal}},
        }
        if crystal != "fcc":
            branch["required"] = ["element", "crystal"]
        branches.append(branch)
    return {"anyOf": branches}


def _species_rule() -> dict[str, Any]:
    """JSON Schema of the species rule: ``element`` with an elemental crystal (fcc by default),
    ``elements`` with a binary one (given), never both."""
    return {
        "oneOf": [
            {
                "required": ["element"],
                "not": {"required": ["elements"]},
                "properties": {"crystal": {"enum": list(ELEMENTAL_CRYSTALS)}},
            },
            {
                "required": ["elements", "crystal"],
                "not": {"required": ["element"]},
                "properties": {"crystal": {"enum": list(BINARY_CRYSTALS)}},
            },
        ]
    }


def _schema_rules(schema: dict[str, Any]) -> None:
    schema["allOf"] = [_reference_crystals(), _species_rule()]


def _element_schema(schema: dict[str, Any]) -> None:
    omit_null(schema)
    schema["enum"] = list(ELEMENTS)


def _elements_schema(schema: dict[str, Any]) -> None:
    omit_null(schema)
    for item in schema.get("prefixItems", []):
        item["enum"] = list(ELEMENTS)
    schema["uniqueItems"] = True


def _symbol(v: str) -> str:
    if v not in ELEMENTS:
        raise ValueError(f"unknown chemical symbol {v!r}")
    return v


class GenerateConfig(_Section):
    """A crystal built by ASE, optionally cut into a surface slab. ``lattice_constant`` is
    required unless ``crystal`` is the element's reference crystal (always for a binary
    crystal)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_schema_rules)

    element: str | None = Field(
        default=None,
        json_schema_extra=_element_schema,
        description="Chemical symbol of an elemental crystal, e.g. 'Cu' (binary crystals: "
        "'elements').",
    )
    elements: tuple[str, str] | None = Field(
        default=None,
        json_schema_extra=_elements_schema,
        description="The two species of a binary crystal (zincblende, rocksalt, "
        "cesiumchloride), e.g. [Si, C]: the first on the sublattice at the origin, the second "
        "at a/4 (1,1,1) (zinc blende), a/2 (1,0,0) (rock salt) or a/2 (1,1,1) (CsCl).",
    )
    crystal: Crystal = Field(default="fcc", description="Crystal structure (ase.build.bulk).")
    lattice_constant: float | None = Field(
        default=None,
        ge=1,
        le=100,
        json_schema_extra=omit_null,
        description="Lattice constant a, Å (default: ASE's reference value of an element).",
    )
    cubic: bool = Field(default=True, description="Use the conventional cubic cell.")
    repeat: tuple[Repeat, Repeat, Repeat] = Field(
        default=(2, 2, 2), description="Supercell repetitions along a, b, c (1 to 50 each)."
    )
    surface: tuple[Miller, Miller, Miller] | None = Field(
        default=None, description="Miller indices of a surface slab (None: bulk; -10 to 10)."
    )
    layers: int = Field(default=4, ge=1, le=100, description="Slab layers (surfaces only).")
    initial_magmom: float | None = Field(
        default=None,
        ge=-10,
        le=10,
        json_schema_extra=omit_null,
        description="Initial magnetic moment of every atom, μB (a ferromagnetic start; "
        "default: none). Antiferromagnetic orders come from a structure file's "
        "initial_magmoms.",
    )
    vacuum: float = Field(default=8.0, gt=0, le=100, description="Vacuum on each side, Å.")

    @field_validator("element")
    @classmethod
    def _element(cls, v: str | None) -> str | None:
        return None if v is None else _symbol(v)

    @field_validator("elements")
    @classmethod
    def _elements(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is None:
            return None
        a, b = (_symbol(x) for x in v)
        if a == b:
            raise ValueError(
                f"two different species, got [{a}, {b}] (one species: element: {a} with an "
                "elemental crystal such as diamond)"
            )
        return (a, b)

    @property
    def formula(self) -> str:
        """The name ASE's ``bulk`` builds: the element, or the two species joined (``SiC``)."""
        return self.element or "".join(self.elements or ())

    def cell_atoms(self) -> Any:
        """The bulk cell (or slab) before ``repeat`` (``ase.Atoms``). ASE's ``bulk`` puts its
        own guess of initial moments on Fe, Co and Ni; that guess is not part of what the
        config gives and is not kept (initial moments come from a structure file's
        ``initial_magmoms``)."""
        from ase.build import bulk, surface

        kw: dict[str, Any] = {"cubic": self.cubic} if self.crystal != "hcp" else {}
        if self.lattice_constant is not None:
            kw["a"] = self.lattice_constant
        atoms = bulk(self.formula, self.crystal, **kw)
        if self.surface is not None:
            atoms = surface(atoms, self.surface, self.layers, vacuum=self.vacuum)
            atoms.pbc = (True, True, False)
        atoms.set_initial_magnetic_moments(
            None if self.initial_magmom is None else [self.initial_magmom] * len(atoms)
        )
        return atoms

    def build(self) -> Any:
        """The structure (``ase.Atoms``)."""
        return self.cell_atoms().repeat(self.repeat)

    @model_validator(mode="after")
    def _buildable(self) -> GenerateConfig:
        self._check_species()
        if self.surface is not None and not any(self.surface):
            raise ValueError("surface: Miller indices (0, 0, 0) name no plane")
        if self.lattice_constant is None:
            self._check_reference()
        try:
            with np.errstate(all="ignore"):  # degenerate surfaces: checked below
                cell = self.cell_atoms()
        except Exception as exc:
            raise ValueError(
                f"ASE cannot build it: {' '.join(f'{type(exc).__name__}: {exc}'.split())[:200]}"
            ) from None
        total = len(cell) * self.repeat[0] * self.repeat[1] * self.repeat[2]
        if total > MAX_GENERATED_ATOMS:
            raise ValueError(f"{total} atoms, more than {MAX_GENERATED_ATOMS}")
        check_geometry(cell, "the built structure")
        return self

    def _check_species(self) -> None:
        binary = self.crystal in BINARY_CRYSTALS
        if self.element is not None and self.elements is not None:
            raise ValueError("give element (one species) or elements (two), not both")
        if binary and self.elements is None:
            raise ValueError(
                f"elements: crystal {self.crystal} has two species: give elements: [A, B] "
                f"(e.g. [Si, C]){' instead of element' if self.element else ''}"
            )
        if not binary and self.element is None:
            if self.elements is not None:
                raise ValueError(
                    f"elements: two species need a binary crystal ({', '.join(BINARY_CRYSTALS)}),"
                    f" not {self.crystal}"
                )
            raise ValueError("element: required field missing")

    def _check_reference(self) -> None:
        if self.element is None:
            raise ValueError(
                f"lattice_constant: needed for {self.formula} as {self.crystal} (ASE has no "
                "reference lattice constant of a compound)"
            )
        ref = reference_crystal(self.element)
        if ref != self.crystal:
            known = (
                f"ASE's reference crystal of {self.element} is {ref}: give crystal: {ref}, "
                "or a lattice_constant"
                if ref
                else f"ASE has no reference crystal of {self.element}: give a lattice_constant"
            )
            raise ValueError(
                f"lattice_constant: needed for {self.element} as {self.crystal} ({known})"
            )
