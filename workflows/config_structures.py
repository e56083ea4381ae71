"""The ``structures`` section: where a campaign's initial structures come from.

A structure source is exactly one of ``generate`` (built by ASE), ``content`` (the text of an
extxyz / xyz / CIF / POSCAR file, given in the config itself) or ``file`` (a path). Contents
and files are read when the config is validated with a :class:`StructurePolicy` in the
validation context (``{"policy": ...}``; without one nothing is read, e.g. a stored snapshot or
the API's schema check) and again at set-up (:func:`read_source`); the rules are in
:mod:`workflows.structure_files` (who may name a file) and :mod:`workflows.structure_text` (parsing).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from ase.data import atomic_numbers, chemical_symbols, reference_states
from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from .config_base import _Section, omit_null
from .config_modifiers import SourceModifiers
from .structure_files import (
    NOT_IMPORTABLE,
    StructurePolicy,
    importable_path,
    local_path,
    read_content,
    read_file,
)
from .structure_text import FORMATS, VACUUM_GAP, check_geometry, vacuum_gap

__all__ = [
    "FORMATS",
    "NOT_IMPORTABLE",
    "GenerateConfig",
    "StructurePolicy",
    "StructureSource",
    "read_source",
]

Repeat = Annotated[int, Field(ge=1, le=50)]
Miller = Annotated[int, Field(ge=-10, le=10)]
StructureFormat = Literal["extxyz", "xyz", "cif", "vasp", "poscar"]
ELEMENTS = tuple(chemical_symbols[1:])
"""Chemical symbols a generated structure may use (H to Og; ``ase.data.chemical_symbols``)."""


def reference_crystal(element: str) -> str | None:
    """The crystal (one of :data:`CRYSTALS`) ASE builds ``element`` in without a lattice
    constant (``ase.data.reference_states``), or ``None``."""
    ref = reference_states[atomic_numbers[element]] or {}
    return ref["symmetry"] if ref.get("symmetry") in CRYSTALS else None


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
            "properties": {"element": {"enum": elements}, "crystal": {"const": crystal}}
        }
        if crystal != "fcc":
            branch["required"] = ["crystal"]
        branches.append(branch)
    return {"anyOf": branches}


INDEX_PATTERN = r"^(-?[0-9]{1,9}|(-?[0-9]{1,9})?:(-?[0-9]{1,9})?(:-?[1-9][0-9]{0,8}|:)?)$"
"""ASE index strings a source accepts: one frame (``0``, ``-1``) or a slice with a non-zero step."""

Crystal = Literal["fcc", "bcc", "hcp", "sc", "diamond"]
CRYSTALS: tuple[str, ...] = typing.get_args(Crystal)


# --------------------------------------------------------------------------- models
class GenerateConfig(_Section):
    """A structure built by ASE: a bulk crystal, optionally cut into a surface slab.
    ``lattice_constant`` is required unless ``crystal`` is the element's reference crystal."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=lambda s: s.update(_reference_crystals())
    )

    element: str = Field(
        description="Chemical symbol, e.g. 'Cu'.", json_schema_extra={"enum": list(ELEMENTS)}
    )
    crystal: Crystal = Field(default="fcc", description="Crystal structure (ase.build.bulk).")
    lattice_constant: float | None = Field(
        default=None,
        ge=1,
        le=100,
        json_schema_extra=omit_null,
        description="Lattice constant a, Å (default: ASE's reference value).",
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
    def _element(cls, v: str) -> str:
        if v not in ELEMENTS:
            raise ValueError(f"unknown chemical symbol {v!r}")
        return v

    def cell_atoms(self) -> Any:
        """The bulk cell (or slab) before ``repeat`` (``ase.Atoms``). ASE's ``bulk`` puts its
        own guess of initial moments on Fe, Co and Ni; that guess is not part of what the
        config gives and is not kept (initial moments come from a structure file's
        ``initial_magmoms``)."""
        from ase.build import bulk, surface

        kw: dict[str, Any] = {"cubic": self.cubic} if self.crystal != "hcp" else {}
        if self.lattice_constant is not None:
            kw["a"] = self.lattice_constant
        atoms = bulk(self.element, self.crystal, **kw)
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
        if self.surface is not None and not any(self.surface):
            raise ValueError("surface: Miller indices (0, 0, 0) name no plane")
        ref = reference_crystal(self.element)
        if self.lattice_constant is None and ref != self.crystal:
            known = (
                f"ASE's reference crystal of {self.element} is {ref}: give crystal: {ref}, "
                "or a lattice_constant"
                if ref
                else f"ASE has no reference crystal of {self.element}: give a lattice_constant"
            )
            raise ValueError(
                f"lattice_constant: needed for {self.element} as {self.crystal} ({known})"
            )
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


MAX_GENERATED_ATOMS = 100_000
"""Most atoms a generated structure may have."""


def _policy(info: ValidationInfo) -> StructurePolicy | None:
    policy = (info.context or {}).get("policy")
    return policy if isinstance(policy, StructurePolicy) else None


def _any_of(*keys: str) -> dict[str, Any]:
    return {"anyOf": [{"required": [k]} for k in keys]}


class StructureSource(SourceModifiers):
    """Initial structures: exactly one of ``file``, ``content`` or ``generate``, optionally
    modified (vacancies, interstitials, a random alloy, strains:
    :mod:`workflows.config_modifiers`)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "oneOf": [
                {"required": ["file"], "not": _any_of("content", "generate")},
                {"required": ["content", "format"], "not": _any_of("file", "generate")},
                {"required": ["generate"], "not": _any_of("file", "content", "format", "repeat")},
            ]
        },
    )

    index: str = Field(
        default=":",
        json_schema_extra={"pattern": INDEX_PATTERN},
        description="Frames to use: an ASE index, one frame ('0', '-1') or a slice ('1:', '::2').",
    )
    format: StructureFormat | None = Field(
        default=None,
        json_schema_extra=omit_null,
        description="Format of 'content' (required there) or of 'file' (default: guessed "
        "from the file name). xyz is read as extxyz; poscar is vasp.",
    )
    file: str | None = Field(
        default=None,
        json_schema_extra=omit_null,
        description="Path of a structure file. Local configs: relative to the config file. "
        "API: a file in one of the operator's import directories (PESFLOW_IMPORT_DIRS), "
        "relative to them or absolute.",
    )
    content: str | None = Field(
        default=None,
        json_schema_extra=omit_null,
        description="The text of a structure file (extxyz, xyz, CIF or POSCAR; see 'format'), "
        "at most PESFLOW_MAX_STRUCTURE_BYTES (default 2 MB).",
    )
    generate: GenerateConfig | None = Field(
        default=None, json_schema_extra=omit_null, description="Build with ASE."
    )
    repeat: tuple[Repeat, Repeat, Repeat] | None = Field(
        default=None,
        json_schema_extra=omit_null,
        description="Supercell of each frame of 'file' or 'content' along a, b, c (1 to 50 each; "
        "> 1 only along periodic directions; 'generate' has its own).",
    )
    regime: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.()+-]*$",
        json_schema_extra=omit_null,
        description="Name of the regime these structures stand for (validation frames, "
        "errors and calibration are reported per regime; default: 'bulk-fcc', "
        "'surface-111', the file's stem, 'content', followed by what the modifiers do: "
        "'-alloy', '-vacancy', '-interstitial', '-strained').",
    )

    def regime_name(self) -> str:
        """The regime of this source: ``regime`` or a name derived from it and its modifiers
        (``bulk-fcc-vacancy``)."""
        if self.regime:
            return self.regime
        g = self.generate
        if g is not None:
            if g.surface is not None:
                base = "surface-" + "".join(str(h) for h in g.surface)
            else:
                base = f"bulk-{g.crystal}"
        elif self.file is not None:
            base = re.sub(r"[^A-Za-z0-9_.()+-]", "_", Path(self.file).stem) or "file"
        else:
            base = "content"
        return base + self.modifier_suffix()

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        """Before anything is read: exactly one source."""
        if isinstance(data, dict):
            given = [k for k in ("file", "content", "generate") if data.get(k) is not None]
            if len(given) != 1:
                raise ValueError(
                    "give exactly one of 'file', 'content' or 'generate'"
                    + (f" (got {', '.join(given)})" if given else "")
                )
        return data

    @model_validator(mode="after")
    def _format_use(self) -> StructureSource:
        if self.format is not None and self.generate is not None:
            raise ValueError("'format' goes with 'file' or 'content', not with 'generate'")
        if self.repeat is not None and self.generate is not None:
            raise ValueError("'repeat' of a generated structure goes inside 'generate'")
        if self.generate is not None and self.slab is not None:
            raise ValueError("'slab' cuts a file or content; a generated slab is generate.surface")
        if self.generate is not None and self.modified():
            g = self.generate
            self.check_counts(len(g.cell_atoms()) * int(np.prod(g.repeat)))
        return self

    @field_validator("index")
    @classmethod
    def _index(cls, v: str) -> str:
        if not re.fullmatch(INDEX_PATTERN, v):
            raise ValueError(
                f"{v!r} is not an ASE index: one frame ('0', '-1') or a slice ('1:', '::2') "
                "with a non-zero step"
            )
        return v

    @field_validator("file")
    @classmethod
    def _readable(cls, v: str | None, info: ValidationInfo) -> str | None:
        policy = _policy(info)
        if v is None or policy is None:
            return v
        read_file(v, info.data.get("format"), info.data.get("index", ":"), policy)
        if policy.mode == "api":
            return importable_path(v, policy)
        return str(local_path(v, policy))

    @field_validator("content")
    @classmethod
    def _parsable(cls, v: str | None, info: ValidationInfo) -> str | None:
        policy = _policy(info)
        if v is not None and info.data.get("format") is None:
            raise ValueError(f"'format' is required with 'content' (one of {', '.join(FORMATS)})")
        if v is not None and policy is not None:
            read_content(v, info.data.get("format"), info.data.get("index", ":"), policy)
        return v

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: Any) -> Any:
        """``content``, ``format``, ``regime`` and the modifiers are left out when unset
        (snapshots of older configs)."""
        data = handler(self)
        if isinstance(data, dict):
            for key in ("content", "format", "regime"):
                if data.get(key, 0) is None:
                    del data[key]
            for key, field in SourceModifiers.model_fields.items():
                if key in data and data[key] == field.default:
                    del data[key]
        return data


def read_source(src: StructureSource, policy: StructurePolicy) -> list:
    """The structures of a ``file`` or ``content`` source as ``ase.Atoms`` (no calculator),
    each repeated ``src.repeat`` times (its constraints, moments and tags with it; refused
    along a non-periodic direction or beyond :data:`MAX_GENERATED_ATOMS`)."""
    if src.content is not None:
        frames = read_content(src.content, src.format, src.index, policy)
    elif src.file is not None:
        frames = read_file(src.file, src.format, src.index, policy)
    else:
        raise ValueError("a generated source has no file or content")
    if src.repeat is None or tuple(src.repeat) == (1, 1, 1):
        return frames
    out = []
    for k, atoms in enumerate(frames):
        flat = [
            ax for ax, n, p in zip("abc", src.repeat, atoms.pbc, strict=True) if n > 1 and not p
        ]
        if flat:
            raise ValueError(f"repeat: frame {k} is not periodic along {', '.join(flat)}")

        axis, gap = vacuum_gap(atoms)
        if src.repeat[axis] > 1 and gap > VACUUM_GAP:
            raise ValueError(
                f"repeat: frame {k} has {gap:.1f} Å of vacuum along {'abc'[axis]}; repeating "
                "it there stacks slabs: repeat only along the crystal's directions"
            )
        total = len(atoms) * int(np.prod(src.repeat))
        if total > MAX_GENERATED_ATOMS:
            raise ValueError(
                f"repeat: frame {k} becomes {total} atoms, more than {MAX_GENERATED_ATOMS}"
            )
        out.append(atoms.repeat(tuple(src.repeat)))
    return out
