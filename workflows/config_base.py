"""Shared pieces of the campaign config models: the one-line :class:`ConfigError`, the strict
section base class, and the formatting of pydantic errors into one line.

Every validation problem becomes one line that names the source, the key path and the problem,
e.g. ``cu.yaml: exploration.walkers[0].temperature: must be > 0 (got -5)`` or
``cu.yaml: exploration.walkers[0]: unknown field 'temperatre' — did you mean 'temperature'?``.
Tags pydantic adds to error locations (validator names, union members such as a labeler's name,
scalar type names) are left out of the key path.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConfigError", "PosFloat", "format_errors", "omit_null"]


class ConfigError(ValueError):
    """An invalid campaign configuration; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PosFloat = Annotated[float, Field(gt=0)]


def omit_null(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of an optional field whose ``None`` means "not given": the JSON
    Schema does not offer ``null`` (leave the key out instead), so a client or fuzzer that
    builds a body from the schema gives a real value or nothing. Validation still takes
    ``None``."""
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    if "default" in schema and schema["default"] is None:
        del schema["default"]


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """The pydantic model classes inside an annotation (Optional / Union / list / dict ...)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _models_in(typing.get_args(tp)[0])
    if origin is not None or isinstance(tp, types.UnionType):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(tp):
            found += [m for m in _models_in(arg) if m not in found]
        return found
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return []


def _tag_of(model: type[BaseModel]) -> Any:
    """A union member's discriminator tag: its ``union_tag`` class attribute, else the
    ``Literal`` value of its ``name`` field."""
    tag = getattr(model, "union_tag", None)
    if isinstance(tag, str):
        return tag
    field = model.model_fields.get("name")
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        return typing.get_args(field.annotation)[0]
    return None


_PYDANTIC_TAG = re.compile(r"^[a-z][a-z0-9_-]*\[.*\]$")  # e.g. "function-after[_check(), X]"
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict", "tuple"}


def _walk(root: type[BaseModel], loc: Sequence[Any]) -> tuple[tuple[Any, ...], list]:
    """``loc`` without pydantic's tags, and the model classes found at its end."""
    models: list[type[BaseModel]] = [root]
    out: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        part = str(part)
        owner = next((m for m in models if part in m.model_fields), None)
        if owner is not None:
            out.append(part)
            models = _models_in(owner.model_fields[part].annotation)
        elif len(models) > 1 and any(_tag_of(m) == part for m in models):
            models = [m for m in models if _tag_of(m) == part]
        elif _PYDANTIC_TAG.match(part) or part in _TYPE_TAGS:
            continue
        else:  # a mapping key: the models of its values stay
            out.append(part)
    return tuple(out), models


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f" (got {text})"


_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _one_error(err: dict[str, Any], root: type[BaseModel]) -> str:
    kind = err["type"]
    raw = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden" and raw:
        # the unknown key is the last element, whatever it looks like; tags only in the path
        loc, parents = _walk(root, raw[:-1])
        where = _path(loc) or "top level"
        msg = f"{where}: unknown field {str(raw[-1])!r}"
        fields = [f for m in parents for f in m.model_fields]
        if fields:
            hint = difflib.get_close_matches(str(raw[-1]), fields, n=1)
            if hint:
                msg += f" — did you mean {hint[0]!r}?"
            else:
                msg += f" (allowed: {', '.join(dict.fromkeys(fields))})"
        return msg
    loc, _ = _walk(root, raw)
    where = _path(loc) or "top level"
    if kind == "missing":
        return f"{where}: required field missing"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"{where}: must be {op} {ctx.get(key)}{_got(value)}"
    if kind == "literal_error":
        return f"{where}: must be one of {ctx.get('expected')}{_got(value)}"
    if kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'")
        return f"{where}.{disc}: unknown {ctx.get('tag')!r}; one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        return f"{where}.{disc}: required field missing"
    if kind == "value_error":
        return f"{where}: {ctx.get('error', err['msg'])}".replace("top level: ", "")
    msg = str(err["msg"])
    msg = msg[:1].lower() + msg[1:]
    return f"{where}: {msg}{_got(value)}"


def format_errors(errors: Sequence[dict[str, Any]], source: str, root: type[BaseModel]) -> str:
    """One line ``<source>: <key path>: <problem>`` (+ how many more problems) for pydantic's
    error dicts, key paths relative to the model ``root``. An unknown field is named first (a
    typo shows up as "unknown field" plus "required field missing")."""
    ordered = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    first = _one_error(ordered[0], root) if ordered else "invalid"
    more = f" (and {len(ordered) - 1} more problem(s))" if len(ordered) > 1 else ""
    return " ".join(f"{source}: {first}{more}".split())
