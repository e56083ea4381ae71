"""Backends found by name: the built-in table, classes registered with :func:`register`, and
``importlib.metadata`` entry points of the group :data:`ENTRY_POINT_GROUP` (``pesflow.labelers``).

An out-of-tree labeler is one installed distribution declaring, e.g. in its ``pyproject.toml``::

    [project.entry-points."pesflow.labelers"]
    mycode = "mycode_pesflow:MyCodeLabeler"

Then ``get_labeler("mycode")`` and a campaign config's ``labeler: {name: mycode}`` use it.
Names are discovered without importing anything; a backend's module is imported on first use
(so importing ``dft_adapters`` imports neither pyscf nor pymatgen nor any plug-in). A broken
entry point raises :class:`LabelerLoadError` naming the distribution and the entry point.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Labeler

__all__ = [
    "ENTRY_POINT_GROUP",
    "LabelerLoadError",
    "UnknownLabelerError",
    "available_labelers",
    "get_labeler",
    "labeler_class",
    "register",
    "unregister",
]

ENTRY_POINT_GROUP = "pesflow.labelers"
"""The entry-point group labelers are discovered in."""

_BUILTIN: dict[str, str] = {
    "emt": "dft_adapters.mock:EMTLabeler",
    "lj": "dft_adapters.mock:LJLabeler",
    "morse": "dft_adapters.mock:MorseLabeler",
    "espresso": "dft_adapters.espresso:EspressoLabeler",
    "pyscf": "dft_adapters.pyscf_backend:PySCFLabeler",
    "vasp": "dft_adapters.vasp:VaspLabeler",
    "cp2k": "dft_adapters.cp2k:CP2KLabeler",
}
"""The built-in backends (also declared as entry points of pesflow itself; this table makes
them available from a source tree whose metadata is not installed)."""

_REGISTERED: dict[str, type[Labeler]] = {}
_LOADED: dict[tuple[str, str], type[Labeler]] = {}


class UnknownLabelerError(ValueError):
    """No backend is registered under the requested name."""


class LabelerLoadError(ImportError):
    """A labeler's entry point (or built-in path) cannot be loaded, or does not name a
    :class:`Labeler` subclass with that registry name. The message names the distribution,
    the entry point and the error."""


@dataclass(frozen=True)
class _Source:
    """Where a name comes from: ``module:attr`` and who declared it."""

    value: str
    origin: str  # "distribution 'x' 1.0, entry point 'n = m:C' (group pesflow.labelers)"


def _is_labeler(obj: Any) -> bool:
    """``issubclass(obj, dft_adapters.base.Labeler)``, by the class's qualified name: the
    registry does not import ``base`` (``base`` -> ``state`` -> ``registry`` would be a cycle:
    the state check names the labelers that honour a state)."""
    return isinstance(obj, type) and any(
        c.__module__ == "dft_adapters.base" and c.__qualname__ == "Labeler" for c in obj.__mro__
    )


def register(cls: type[Labeler]) -> type[Labeler]:
    """Class decorator: register a :class:`Labeler` subclass under ``cls.name`` (wins over a
    built-in or an entry point of the same name in this process)."""
    if not _is_labeler(cls):
        raise TypeError(f"{cls!r} is not a Labeler subclass")
    _REGISTERED[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a class registered with :func:`register` (no effect on built-ins or entry
    points)."""
    _REGISTERED.pop(name, None)


def _entry_points() -> dict[str, list[_Source]]:
    """Entry points of :data:`ENTRY_POINT_GROUP` by name, one per distinct target."""
    found: dict[str, list[_Source]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        who = f"distribution {dist.name!r} {dist.version}" if dist is not None else "a distribution"
        source = _Source(
            ep.value.replace(" ", ""),
            f"{who}, entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP})",
        )
        sources = found.setdefault(ep.name, [])
        if all(s.value != source.value for s in sources):
            sources.append(source)
    return found


def available_labelers() -> list[str]:
    """Names of all known backends: built-in, registered and entry points (none imported)."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def _source(name: str) -> _Source | None:
    sources = list(_entry_points().get(name, []))
    builtin = _BUILTIN.get(name)
    if builtin is not None and all(s.value != builtin for s in sources):
        sources.append(_Source(builtin, f"pesflow built-in {name!r} ({builtin})"))
    if len(sources) > 1:
        raise LabelerLoadError(
            f"labeler name {name!r} is claimed more than once: "
            + "; ".join(s.origin for s in sources)
            + ". Uninstall one of them."
        )
    return sources[0] if sources else None


def labeler_class(name: str) -> type[Labeler]:
    """The class registered under ``name``; its module is imported on first use.

    Raises :class:`UnknownLabelerError` (a ``ValueError``) for an unknown name and
    :class:`LabelerLoadError` (an ``ImportError``) for an entry point that cannot be loaded,
    does not name a :class:`Labeler` subclass, names one whose ``name`` differs, or a name
    claimed by two distributions.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    source = _source(name)
    if source is None:
        raise UnknownLabelerError(
            f"unknown labeler {name!r}; available: {', '.join(available_labelers())}"
        )
    key = (name, source.value)
    if key not in _LOADED:
        _LOADED[key] = _load(name, source)
    return _LOADED[key]


def _load(name: str, source: _Source) -> type[Labeler]:
    module, _, attr = source.value.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as exc:
        raise LabelerLoadError(
            f"labeler {name!r} cannot be loaded from {source.origin}: {type(exc).__name__}: {exc}"
        ) from exc
    if not _is_labeler(obj):
        raise LabelerLoadError(
            f"labeler {name!r} from {source.origin} is {obj!r}, not a dft_adapters.Labeler subclass"
        )
    if getattr(obj, "name", None) != name:
        raise LabelerLoadError(
            f"labeler {name!r} from {source.origin} is {obj.__qualname__}, whose name is "
            f"{getattr(obj, 'name', None)!r}; the entry point's name must be the class's name"
        )
    return obj


def get_labeler(name: str, **kwargs: Any) -> Labeler:
    """Build the labeler ``name``.

    Keyword arguments that are fields of the backend's settings class form the "what" settings;
    ``settings=``, ``executor=``, ``retry_policy=``, ``preflight=`` and backend extras (e.g. the
    mock's ``faults=``) go to the constructor. Unknown names raise :class:`UnknownLabelerError`,
    unknown keywords ``TypeError``, a broken entry point :class:`LabelerLoadError`.
    """
    return labeler_class(name).from_kwargs(**kwargs)
