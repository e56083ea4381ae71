"""What the served OpenAPI document adds to FastAPI's: links, and this server's profile names.

**Links** say how a client follows the id a response returned to the operations that take it.

A ``POST /campaigns`` answer carries the new campaign's ``id``; every operation with a
``{campaign_id}`` path parameter can take it, and a run's ``id`` (``POST .../resume``,
``.../retrain``, ``.../next-iteration``) goes to ``GET /runs/{run_id}``. The links are derived
from the document itself (response schemas with an ``id`` and path parameters named
``<resource>_id``), so a new route is linked without listing it here. Clients and stateful
fuzzers (schemathesis) read them: OpenAPI 3.1, section 4.8.20 (Link Object).

**Execution profiles**: a campaign config names one (``execution.profile``); the document lists
the names this server's operator defined (``PESFLOW_EXECUTION_PROFILES`` and the built-in
``local``) as the enum of that field, read again on every request for the document, so a body
built from it names a profile that exists.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["add_links", "add_profiles", "document"]

# The response schema that carries a resource's id, and the path parameter that takes it.
_PRODUCERS = {
    "CampaignDetail": "campaign_id",
    "CampaignOut": "campaign_id",
    "RunOut": "run_id",
    "ModelOut": "model_id",
    "LabelOut": "label_id",
    "StructureOut": "structure_id",
}


def _schema_name(response: dict[str, Any]) -> str | None:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


def _consumers(paths: dict[str, Any], param: str) -> list[tuple[str, dict[str, Any]]]:
    """``(link name, Link Object)`` for every operation with path parameter ``param``."""
    out = []
    for path, ops in paths.items():
        if f"{{{param}}}" not in path:
            continue
        for method, op in ops.items():
            if not isinstance(op, dict) or "operationId" not in op:
                continue
            out.append(
                (
                    f"{method.upper()} {path}",
                    {
                        "operationId": op["operationId"],
                        "parameters": {param: "$response.body#/id"},
                    },
                )
            )
    return out


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``links`` to every 2xx response whose body is a single resource with an ``id``
    (:data:`_PRODUCERS`) pointing at the operations that take that id. Returns ``schema``."""
    paths = schema.get("paths", {})
    for ops in paths.values():
        for op in ops.values():
            if not isinstance(op, dict):
                continue
            for code, response in op.get("responses", {}).items():
                param = _PRODUCERS.get(_schema_name(response) or "")
                if code.startswith("2") and param:
                    response["links"] = dict(_consumers(paths, param))
    return schema


def add_profiles(schema: dict[str, Any]) -> dict[str, Any]:
    """Set the enum of ``ProfileRef.profile`` to this process's execution profile names
    (:func:`workflows.service.profile_names`); without an enum while the operator's
    profiles file is broken (creating a campaign then answers 422 naming the file's problem).
    Returns ``schema``."""
    from workflows.service import ProfilesError, profile_names

    ref = schema.get("components", {}).get("schemas", {}).get("ProfileRef")
    if ref is not None:
        prop = ref["properties"]["profile"]
        try:
            prop["enum"] = profile_names()
        except ProfilesError:
            prop.pop("enum", None)
    return schema


BUILTIN_WALKERS = ("md", "neb")
"""Explorers with their own walker schema; any other registered one uses
``ExplorerWalkerConfig``."""


def add_registries(schema: dict[str, Any]) -> dict[str, Any]:
    """Set the enums of the names the config takes from registries (``model.backend``,
    ``selection.strategy``, the ``kind`` of a walker of another registered explorer) to this
    process's registered names (:func:`workflows.service.registered_names`), so that the
    document accepts exactly what creating a campaign accepts; without another registered
    explorer, the generic walker schema leaves the walkers' ``oneOf``. Returns ``schema``."""
    from workflows.service import registered_names

    names = registered_names()
    comps = schema.get("components", {}).get("schemas", {})
    for comp, prop, values in (
        ("ModelSection", "backend", names["model_backends"]),
        ("SelectionConfig", "strategy", names["selectors"]),
    ):
        if comp in comps and prop in comps[comp].get("properties", {}):
            comps[comp]["properties"][prop]["enum"] = values
    others = [n for n in names["explorers"] if n not in BUILTIN_WALKERS]
    generic = comps.get("ExplorerWalkerConfig")
    if generic is not None and others:
        generic["properties"]["kind"]["enum"] = others
    elif generic is not None:
        ref = "#/components/schemas/ExplorerWalkerConfig"
        walkers = comps.get("ExplorationConfig", {}).get("properties", {}).get("walkers", {})
        one_of = walkers.get("items", {}).get("oneOf")
        if one_of is not None:
            walkers["items"]["oneOf"] = [x for x in one_of if x.get("$ref") != ref]
    return schema


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` carry the links of :func:`add_links`, the registered names of
    :func:`add_registries` (once: entry points are read at start) and the profile names of
    :func:`add_profiles` (refreshed on every call: the operator's file may change)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return add_profiles(app.openapi_schema)
        return add_profiles(add_registries(add_links(original())))

    app.openapi = openapi  # type: ignore[method-assign]
