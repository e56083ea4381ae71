"""Backends found by name. Built-in backends are imported lazily, so importing
``dft_adapters`` does not import pyscf or pymatgen."""

from __future__ import annotations

import importlib
from typing import Any

from .base import Labeler

__all__ = ["available_labelers", "get_labeler", "labeler_class", "register"]

_BUILTIN: dict[str, str] = {
    "emt": "dft_adapters.mock:EMTLabeler",
    "lj": "dft_adapters.mock:LJLabeler",
    "morse": "dft_adapters.mock:MorseLabeler",
    "espresso": "dft_adapters.espresso:EspressoLabeler",
    "pyscf": "dft_adapters.pyscf_backend:PySCFLabeler",
    "vasp": "dft_adapters.vasp:VaspLabeler",
    "cp2k": "dft_adapters.cp2k:CP2KLabeler",
}
_REGISTERED: dict[str, type[Labeler]] = {}


class UnknownLabelerError(ValueError):
    """No backend is registered under the requested name."""


def register(cls: type[Labeler]) -> type[Labeler]:
    """Class decorator: register a :class:`Labeler` subclass under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Labeler)):
        raise TypeError(f"{cls!r} is not a Labeler subclass")
    _REGISTERED[cls.name] = cls
    return cls


def available_labelers() -> list[str]:
    """Names of all known backends (built-in and registered)."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def labeler_class(name: str) -> type[Labeler]:
    """The class registered under ``name`` (imports a built-in backend on first use)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise UnknownLabelerError(
            f"unknown labeler {name!r}; available: {', '.join(available_labelers())}"
        )
    module, _, attr = _BUILTIN[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _REGISTERED[name] = cls
    return cls


def get_labeler(name: str, **kwargs: Any) -> Labeler:
    """Build the labeler ``name``.

    Keyword arguments that are fields of the backend's settings class form the "what" settings;
    ``settings=``, ``executor=``, ``retry_policy=``, ``preflight=`` and backend extras (e.g. the
    mock's ``faults=``) go to the constructor. Unknown names raise ``TypeError``.
    """
    return labeler_class(name).from_kwargs(**kwargs)
