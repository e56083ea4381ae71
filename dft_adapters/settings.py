"""The "what" of a calculation: frozen settings dataclasses and their stable hash.

Every backend has a ``Settings`` subclass holding everything that changes the *numbers* it
returns (functional, cutoffs, k-point density, smearing, SCF limits, pseudopotentials). Fields
that only say *where* something lives (e.g. a pseudopotential directory) carry
``metadata={"hash": False}`` and are left out of :func:`settings_hash`, so the hash is the same on
a laptop and on a cluster. How a code is run (command, MPI launcher, scratch, timeout) lives in
:class:`dft_adapters.execution.Executor` and never enters the hash.

The retry policy changes three generic knobs when a backend has them:
``max_scf_steps``, ``mixing`` (density-mixing fraction, smaller is more cautious) and
``smearing`` (eV).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Self

__all__ = ["Settings", "canonical_json", "settings_hash"]


def _canonical(value: Any) -> Any:
    """Turn ``value`` into plain JSON types with a deterministic form."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("hash", True)
        }
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite setting value {value!r}")
        # repr round-trips; normalise -0.0 and integral floats so 30 and 30.0 hash alike
        return int(value) if value.is_integer() else float(repr(value))
    if hasattr(value, "item"):  # numpy scalar
        return _canonical(value.item())
    if hasattr(value, "tolist"):  # numpy array
        return _canonical(value.tolist())
    raise TypeError(f"setting of type {type(value).__name__} cannot be hashed: {value!r}")


def canonical_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) of settings or a plain mapping."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))


def settings_hash(labeler_name: str, settings: Any) -> str:
    """sha256 hex digest of ``{"labeler": name, "settings": canonical settings}``."""
    payload = canonical_json({"labeler": labeler_name, "settings": settings})
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base class of the per-backend "what" settings (frozen dataclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """All fields (hashed and not) as plain JSON types."""
        return {f.name: _canonical(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def hashed_dict(self) -> dict[str, Any]:
        """The fields that enter the settings hash."""
        return _canonical(self)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def has(self, name: str) -> bool:
        """True when the settings have a field ``name``."""
        return any(f.name == name for f in dataclasses.fields(self))

    def diff(self, other: Settings) -> dict[str, Any]:
        """Fields of ``other`` that differ from ``self``, with ``other``'s values."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: v for k, v in theirs.items() if mine.get(k) != v}
