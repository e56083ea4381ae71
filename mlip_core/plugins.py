"""Extension points found by name: built-ins plus ``importlib.metadata`` entry points.

Each extension kind of ``mlip_core`` (model backends ``pesflow.models``, explorers
``pesflow.explorers``, selectors ``pesflow.selectors``) keeps a :class:`Registry`. An
out-of-tree package declares its implementation in its own ``pyproject.toml``::

    [project.entry-points."pesflow.explorers"]
    my-explorer = "my_package.explore:MyExplorer"

and it becomes usable from a campaign config by that name once installed. Entry points are
loaded lazily, on the first lookup of their name (importing ``mlip_core`` imports no plugin).
A broken entry point raises :class:`PluginError` naming the distribution and the entry point.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import fields
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = ["PluginError", "Registry", "check_field_bounds", "dataclass_options", "missing_members"]

T = TypeVar("T")


class PluginError(ValueError):
    """Unknown name, or an implementation that cannot be loaded or fails its protocol."""


class Registry(Generic[T]):
    """Implementations of one extension kind by name.

    Args:
        kind: what is registered, for messages (``"model backend"``).
        group: the entry-point group (``"pesflow.models"``).
        builtin: name -> ``"module:attribute"`` of the implementations shipped with pesflow.
        protocol: the ``runtime_checkable`` Protocol every implementation must satisfy (a
            miss raises :class:`PluginError` naming the missing members).
        check: further checks on every loaded implementation; raises
            ``TypeError``/``ValueError`` if it does not fit.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtin: dict[str, str],
        protocol: type,
        check: Callable[[T], None] | None = None,
    ) -> None:
        self.kind, self.group = kind, group
        self._builtin = dict(builtin)
        self._loaded: dict[str, T] = {}
        self._protocol = protocol
        self._extra_check = check

    def _check(self, impl: Any) -> None:
        if not isinstance(impl, self._protocol):
            missing = ", ".join(missing_members(impl, self._protocol))
            raise PluginError(
                f"{impl!r} does not implement the {self._protocol.__name__} protocol: "
                f"lacks {missing}"
            )
        if self._extra_check is not None:
            self._extra_check(impl)

    def _entry_points(self) -> dict[str, object]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Every known name: built-in, registered in this process, and entry points."""
        return sorted(set(self._builtin) | set(self._loaded) | set(self._entry_points()))

    def register(self, name: str, impl: T, *, replace: bool = False) -> T:
        """Register ``impl`` under ``name`` in this process (tests, notebooks)."""
        self._check(impl)
        if name in self._loaded and not replace:
            raise PluginError(f"a {self.kind} named {name!r} is already registered")
        self._loaded[name] = impl
        return impl

    def unregister(self, name: str) -> None:
        """Forget a name registered in this process."""
        self._loaded.pop(name, None)

    def get(self, name: str) -> T:
        """The implementation called ``name``.

        Raises:
            PluginError: unknown name (the message lists the known ones), or an entry point
                that fails to import or does not fit the protocol.
        """
        if name in self._loaded:
            return self._loaded[name]
        if name in self._builtin:
            module, _, attr = self._builtin[name].partition(":")
            impl = getattr(importlib.import_module(module), attr)
        else:
            ep = self._entry_points().get(name)
            if ep is None:
                raise PluginError(
                    f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
                )
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            try:
                impl = ep.load()  # type: ignore[attr-defined]
            except Exception as exc:
                raise PluginError(
                    f"{self.kind} {name!r}: entry point {ep.value!r} of distribution "  # type: ignore[attr-defined]
                    f"{dist!r} (group {self.group}) cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
        if isinstance(impl, type):
            impl = impl()
        try:
            self._check(impl)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{self.kind} {name!r}: {exc}") from exc
        self._loaded[name] = impl
        return impl


def missing_members(obj: Any, protocol: type) -> list[str]:
    """Names a protocol declares (attributes and methods) that ``obj`` lacks."""
    names = {
        n
        for klass in protocol.__mro__
        if klass not in (object, Generic)
        for n in (*getattr(klass, "__annotations__", {}), *vars(klass))
        if not n.startswith("_")
    }
    return sorted(n for n in names if not hasattr(obj, n))


def dataclass_options(cls: type, options: Mapping[str, Any], what: str) -> Any:
    """``cls(**options)`` for an implementation's parameter dataclass; ``ValueError`` names an
    unknown key (with the closest known one) or a value the dataclass refuses. ``what`` names
    the implementation in messages (``"model backend 'mace'"``)."""
    import typing

    known = [f.name for f in fields(cls)]
    for key in options:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise ValueError(
                f"unknown option {key!r} for {what}"
                + (f" — did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(known)}")
            )
    hints = typing.get_type_hints(cls)
    for key, value in options.items():
        want = _SIMPLE.get(hints.get(key))  # type: ignore[arg-type]
        if want is not None and not _is(value, want):
            raise ValueError(f"{key} must be {want[1]}, got {value!r} (for {what})")
    return cls(**options)


_SIMPLE: dict[Any, tuple[Any, str]] = {
    int: (int, "an integer"),
    float: ((int, float), "a number"),
    bool: (bool, "true or false"),
    str: (str, "a string"),
}


def _is(value: Any, want: tuple[Any, str]) -> bool:
    if isinstance(value, bool) and want[0] is not bool:
        return False
    return isinstance(value, want[0])


_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def check_field_bounds(obj: Any) -> None:
    """Check a parameter dataclass against its fields' metadata bounds (``ge``, ``gt``, ``le``,
    ``lt``): a bounded field holds a number (an ``int`` where annotated ``int``) within them.
    Raises ``ValueError`` naming the field, the bound and the value."""
    for f in fields(obj):
        bounds = {k: v for k, v in f.metadata.items() if k in _BOUNDS}
        if not bounds:
            continue
        value = getattr(obj, f.name)
        want_int = f.type in (int, "int")
        ok_type = isinstance(value, int) if want_int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            kind = "an integer" if want_int else "a number"
            raise ValueError(f"{f.name} must be {kind}, got {value!r}")
        for key, bound in bounds.items():
            test, op = _BOUNDS[key]
            if not test(value, bound):
                raise ValueError(f"{f.name} must be {op} {bound}, got {value!r}")
