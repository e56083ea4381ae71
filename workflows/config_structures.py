"""The ``structures`` section: where a campaign's initial structures come from.

A structure source is exactly one of ``generate`` (built by ASE:
:mod:`workflows.config_generate`), ``content`` (the text of an
extxyz / xyz / CIF / POSCAR file, given in the config itself) or ``file`` (a path). Contents
and files are read when the config is validated with a :class:`StructurePolicy` in the
validation context (``{"policy": ...}``; without one nothing is read, e.g. a stored snapshot or
the API's schema check) and again at set-up (:func:`read_source`); the rules are in
:mod:`workflows.structure_files` (who may name a file) and :mod:`workflows.structure_text` (parsing).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from .config_base import omit_null
from .config_generate import CRYSTALS, MAX_GENERATED_ATOMS, GenerateConfig, reference_crystal
from .config_modifiers import SourceModifiers
from .structure_files import (
    NOT_IMPORTABLE,
    StructurePolicy,
    importable_path,
    local_path,
    read_content,
    read_file,
)
from .structure_text import FORMATS, VACUUM_GAP, vacuum_gap

__all__ = [
    "CRYSTALS",
    "FORMATS",
    "MAX_GENERATED_ATOMS",
    "NOT_IMPORTABLE",
    "GenerateConfig",
    "StructurePolicy",
    "StructureSource",
    "read_source",
    "reference_crystal",
]

Repeat = Annotated[int, Field(ge=1, le=50)]
StructureFormat = Literal["extxyz", "xyz", "cif", "vasp", "poscar"]

INDEX_PATTERN = r"^(-?[0-9]{1,9}|(-?[0-9]{1,9})?:(-?[0-9]{1,9})?(:-?[1-9][0-9]{0,8}|:)?)$"
"""ASE index strings a source accepts: one frame (``0``, ``-1``) or a slice with a non-zero step."""


# --------------------------------------------------------------------------- models
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
