"""The "what" of a calculation: frozen settings dataclasses and their stable hash.

Every backend has a ``Settings`` subclass holding everything that changes the *numbers* it
returns (functional, cutoffs, k-point density, smearing, SCF limits, pseudopotentials). Fields
that only say *where* something lives (e.g. a pseudopotential directory) carry
``metadata={"hash": False}`` and are left out of :func:`settings_hash`, so the hash is the same on
a laptop and on a cluster. How a code is run (command, MPI launcher, scratch, timeout) lives in
:class:`dft_adapters.execution.Executor` and never enters the hash.

Who may set what: fields marked ``metadata={"operator": True}`` (server paths such as
``pseudo_dir``) belong to whoever runs the server, never to a campaign config sent by a client
(:meth:`Settings.operator_fields`). :meth:`Settings.check_author_settings` is the contract for
values a client gives: operator fields are refused, and each backend refuses what inside its
free-form values could name a server file or inject input (e.g. QE's ``outdir``, a CP2K
``@INCLUDE``, a pseudopotential name with a ``/``). Settings are data: nothing is imported or
executed.

The retry policy changes three generic knobs when a backend has them:
``max_scf_steps``, ``mixing`` (density-mixing fraction, smaller is more cautious) and
``smearing`` (eV).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Self

__all__ = [
    "OPERATOR",
    "AuthorSettingsError",
    "Scalar",
    "Settings",
    "canonical_json",
    "check_plain_name",
    "check_single_line",
    "json_types",
    "settings_hash",
]

OPERATOR: dict[str, bool] = {"hash": False, "operator": True}
"""Field metadata of an operator-only setting (a server path): not hashed, never from a client."""

Scalar = str | int | float | bool
"""A plain JSON value of a free-form setting (a namelist entry, an INCAR tag)."""

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+()@,*-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuthorSettingsError(ValueError):
    """A setting a campaign author may not give; the message is one line starting with the
    setting's key path (e.g. ``input_data.control.outdir: ...``)."""


def check_plain_name(value: Any, where: str) -> None:
    """Raise :class:`AuthorSettingsError` unless ``value`` is a plain file name: letters, digits
    and ``. _ + - ( ) @ , *``, not starting with ``.``, no ``/``, ``\\`` or ``..``."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise AuthorSettingsError(
            f"{where}: must be a plain file name (letters, digits, '._+-', no '/' or '..')"
            f"{_got(value)}"
        )


def check_single_line(value: Any, where: str) -> None:
    """Raise :class:`AuthorSettingsError` when a string in ``value`` (nested mappings and lists
    included, keys too) holds a line break or another control character: it could start a new
    line of the code's input file."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise AuthorSettingsError(f"{where}: must be one line without control characters")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_single_line(str(key), f"{where}.{key!r}")
            check_single_line(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_single_line(item, f"{where}[{i}]")


def _got(value: Any) -> str:
    text = repr(value)
    return f" (got {text[:57] + '...' if len(text) > 60 else text})"


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


def json_types(value: Any) -> Any:
    """``value`` as plain JSON types (tuples become lists, numpy scalars/arrays Python numbers
    and lists, integral floats ints), the form settings take in results and in the database.
    Raises ``TypeError`` / ``ValueError`` for values JSON cannot hold (objects, NaN)."""
    return _canonical(value)


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

    @classmethod
    def operator_fields(cls) -> frozenset[str]:
        """Names of the fields only the operator sets (``metadata={"operator": True}``): server
        paths, given by an execution profile, never by a campaign config from a client."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("operator"))

    @classmethod
    def author_fields(cls) -> tuple[dataclasses.Field, ...]:
        """The fields a campaign author may set (all but :meth:`operator_fields`)."""
        return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("operator"))

    @classmethod
    def check_author_settings(cls, values: Mapping[str, Any]) -> None:
        """Check settings given by a campaign author (an API client): raise
        :class:`AuthorSettingsError` (one line naming the key) for an operator field, an
        unknown field, or a value the backend refuses from authors (:meth:`_check_author`).
        Types are not checked here (the settings class and the config schema do that)."""
        operator = cls.operator_fields()
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key in operator:
                raise AuthorSettingsError(
                    f"{key}: is an operator setting (a server path, set in the execution "
                    "profile), not accepted from a campaign config"
                )
            if key not in names:
                raise AuthorSettingsError(f"{key}: unknown setting of {cls.__name__}")
        for key, value in values.items():
            if key not in cls._multiline_fields():
                check_single_line(value, key)
        cls._check_author(values)

    @classmethod
    def _multiline_fields(cls) -> frozenset[str]:
        """String fields that may hold several lines (checked by the backend instead)."""
        return frozenset()

    @classmethod
    def _check_author(cls, values: Mapping[str, Any]) -> None:
        """Backend hook of :meth:`check_author_settings` (free-form values)."""

    def diff(self, other: Settings) -> dict[str, Any]:
        """Fields of ``other`` that differ from ``self``, with ``other``'s values."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: v for k, v in theirs.items() if mine.get(k) != v}
