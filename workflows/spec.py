"""The campaign author's config (:class:`CampaignSpec`): what an API client may send.

It has every science section of :class:`workflows.config.CampaignConfig` (structures, labeler
physics, bootstrap, validation, committee, training, exploration, trust, selection,
convergence) but ``execution`` only names an operator's profile (:class:`ProfileRef`) and the
labeler is a union over the backends, discriminated by ``name``, whose ``settings`` are typed
models generated from the backends' settings dataclasses without their operator-only fields
(server paths) and checked by the backends' author contract
(:meth:`dft_adapters.Settings.check_author_settings`). Its JSON Schema
(``CampaignSpec.model_json_schema()``, and the API's OpenAPI document) is complete: clients and
fuzzers can build valid bodies from it.

:func:`spec_to_config` turns a validated spec into the :class:`CampaignConfig` that is stored
(``execution: {profile: NAME}``), reading structure contents and import files under the API's
:class:`~workflows.config_structures.StructurePolicy`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from .config import CampaignConfig, ConfigError, _Campaign, parse_config
from .config_base import format_errors
from .config_execution import ProfileRef
from .config_labeler import MOCK_LABELERS, FaultConfig, LabelerPolicy
from .config_structures import StructurePolicy

__all__ = [
    "CampaignSpec",
    "LabelerSpec",
    "ModelSpec",
    "format_body_errors",
    "labeler_spec_model",
    "model_spec_model",
    "settings_model",
    "spec_to_config",
]


def _operator_refused(settings_cls: Any) -> Any:
    def refuse(cls: type, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in settings_cls.operator_fields():
                    raise ValueError(
                        f"{key}: is an operator setting (a server path, set in the execution "
                        "profile), not accepted from a campaign config"
                    )
        return data

    return model_validator(mode="before")(classmethod(refuse))


def _author_contract(settings_cls: Any) -> Any:
    def check(self: BaseModel) -> BaseModel:
        values = self.model_dump(exclude_unset=True)
        settings_cls.check_author_settings(values)
        try:
            settings_cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(" ".join(str(exc).split())) from None
        return self

    return model_validator(mode="after")(check)


def settings_model(name: str) -> type[BaseModel]:
    """A pydantic model of the author-settable settings of labeler ``name`` (its settings
    dataclass without operator-only fields; defaults and types from the dataclass)."""
    from dft_adapters import labeler_class

    settings_cls = labeler_class(name).settings_cls
    hints = typing.get_type_hints(settings_cls)
    fields: dict[str, Any] = {}
    for f in settings_cls.author_fields():
        if f.default is not dataclasses.MISSING:
            spec = Field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            spec = Field(default_factory=f.default_factory)
        else:
            spec = Field()
        fields[f.name] = (hints[f.name], spec)
    return create_model(
        f"{settings_cls.__name__}Spec",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=settings_cls.__doc__,
        __validators__={
            "_operator": _operator_refused(settings_cls),
            "_contract": _author_contract(settings_cls),
        },
        **fields,
    )


_OPERATOR_LABELER_KEYS = ("command", "launcher", "env", "scratch", "scratch_root", "timeout")


class _LabelerSpecBase(LabelerPolicy):
    @model_validator(mode="before")
    @classmethod
    def _no_executor(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in _OPERATOR_LABELER_KEYS or key == "executor":
                    raise ValueError(
                        f"unknown field {key!r} — a labeler's command, launcher, environment, "
                        "scratch and timeout are the operator's (execution profile), not a "
                        "campaign config's"
                    )
        return data


def labeler_spec_model(name: str) -> type[BaseModel]:
    """The ``labeler`` section for backend ``name``: ``name`` (the discriminator), typed
    ``settings`` (:func:`settings_model`), ``faults`` (mock labelers only), ``retries`` and
    ``max_failure_rate``."""
    settings = settings_model(name)
    extra: dict[str, Any] = {}
    if name in MOCK_LABELERS:
        extra["faults"] = (FaultConfig | None, Field(default=None, description="Injected faults."))
    return create_model(
        f"{name.capitalize()}LabelerSpec",
        __base__=_LabelerSpecBase,
        __doc__=f"The {name!r} labeler.",
        name=(Literal[name], Field(description="Labeler backend.")),  # type: ignore[valid-type]
        settings=(settings, Field(default_factory=settings, description="Backend settings.")),
        **extra,
    )


def _labeler_union() -> Any:
    """One model per loadable labeler; a plug-in whose entry point is broken is left out of
    the API's schema with a warning (``pesflow run`` of a config naming it says why)."""
    import logging

    from dft_adapters import available_labelers
    from dft_adapters.registry import LabelerLoadError

    models = []
    for name in available_labelers():
        try:
            models.append(labeler_spec_model(name))
        except LabelerLoadError as exc:
            logging.getLogger(__name__).warning("labeler %r not offered by the API: %s", name, exc)
    return Annotated[Union[tuple(models)], Field(discriminator="name")]  # noqa: UP007


LabelerSpec = _labeler_union()
"""The ``labeler`` section of a :class:`CampaignSpec` (a union discriminated by ``name``)."""


_BOUND_KEYS = ("ge", "gt", "le", "lt")


def model_spec_model(name: str) -> type[BaseModel]:
    """The ``model`` section for model backend ``name``: ``backend`` (the discriminator),
    ``n_members``, ``cutoff``, ``repulsion`` and the backend's options, typed from its ``options_cls`` (types,
    defaults and the bounds in the fields' metadata), checked by the backend."""
    from mlip_core.backends import get_backend

    from .config_model import ModelSection

    backend = get_backend(name)
    cls = backend.options_cls
    hints = typing.get_type_hints(cls)

    def spec(f: dataclasses.Field) -> Any:
        bounds = {k: v for k, v in f.metadata.items() if k in _BOUND_KEYS}
        if f.default_factory is not dataclasses.MISSING:  # e.g. GAP's e0: {}
            return Field(default_factory=f.default_factory, **bounds)
        return Field(default=f.default, **bounds)

    opts: dict[str, Any] = {f.name: (hints[f.name], spec(f)) for f in dataclasses.fields(cls)}
    common = ModelSection.model_fields

    def check(self: BaseModel) -> BaseModel:
        backend.check_options(
            self.model_dump(exclude={"backend", "n_members", "cutoff", "repulsion"})
        )
        return self

    model = create_model(
        f"{name.capitalize()}ModelSpec",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=f"The committee as {name!r} models. {cls.__doc__ or ''}",
        __validators__={"_backend": model_validator(mode="after")(check)},
        # only the default backend may be left out (the discriminator reads a missing one
        # as native); any other is named
        backend=(
            Literal[name],  # type: ignore[valid-type]
            Field(default=name, description="Model backend.")
            if name == "native"
            else Field(description="Model backend."),
        ),
        n_members=(int, common["n_members"]),
        cutoff=(float, common["cutoff"]),
        repulsion=(common["repulsion"].annotation, common["repulsion"]),
        **opts,
    )
    model.union_tag = name  # type: ignore[attr-defined]  # error paths: model.<key>
    return model


def _backend_of(value: Any) -> str:
    """The model section's backend (``native`` when not given)."""
    if isinstance(value, dict):
        return str(value.get("backend", "native"))
    return str(getattr(value, "backend", "native"))


def _model_union() -> Any:
    from pydantic import Discriminator, Tag

    from mlip_core.backends import BACKENDS

    names = BACKENDS.names()
    models = tuple(Annotated[model_spec_model(n), Tag(n)] for n in names)
    return Annotated[
        Union[models],  # noqa: UP007
        Discriminator(
            _backend_of,
            custom_error_type="unknown_backend",
            custom_error_message=f"backend must be one of {', '.join(names)}",
        ),
    ]


ModelSpec = _model_union()
"""The ``model`` section of a :class:`CampaignSpec` (a union discriminated by ``backend``)."""


def _default_model() -> BaseModel:
    from pydantic import TypeAdapter

    return TypeAdapter(ModelSpec).validate_python({})


def _default_labeler() -> BaseModel:
    from pydantic import TypeAdapter

    return TypeAdapter(LabelerSpec).validate_python({"name": "emt"})


class CampaignSpec(_Campaign):
    """A campaign config as an API client sends it: the science, and the name of an execution
    profile the operator defined (default ``local``)."""

    labeler: LabelerSpec = Field(  # type: ignore[valid-type]
        default_factory=_default_labeler, description="The reference code and its physics."
    )
    model: ModelSpec = Field(  # type: ignore[valid-type]
        default_factory=_default_model, description="The committee: backend, size, options."
    )
    execution: ProfileRef = Field(
        default_factory=ProfileRef,
        description="Only {profile: NAME}: where and how the campaign runs is the operator's.",
    )


def spec_to_config(spec: CampaignSpec, policy: StructurePolicy) -> CampaignConfig:
    """The stored config of ``spec``: what the author gave (defaults filled in when read) and
    ``execution: {profile: NAME}``; structure contents and files are read under ``policy``
    (one-line :class:`ConfigError` naming ``config: <key path>``). The profile must exist in
    this process's settings."""
    from .profiles import resolve_execution

    data = spec.model_dump(mode="json", exclude_unset=True)
    data["execution"] = {"profile": spec.execution.profile}
    cfg = parse_config(data, source="config", policy=policy)
    try:
        resolve_execution(cfg.execution)
    except ConfigError as exc:
        if type(exc) is not ConfigError:  # the operator's profiles file is broken
            raise
        raise ConfigError(f"config: {exc}") from None
    return cfg


def format_body_errors(errors: Sequence[dict[str, Any]], root: type[BaseModel]) -> str:
    """One line for a request body's validation errors (FastAPI's, located under ``body``):
    ``config: <key path>: <problem>`` for the campaign config, else
    ``request body: <key path>: <problem>`` relative to ``root``."""
    errs = [dict(e, loc=tuple(e.get("loc", ()))[1:]) for e in errors]
    if errs and all(e["loc"][:1] == ("config",) for e in errs):
        return format_errors([dict(e, loc=e["loc"][1:]) for e in errs], "config", CampaignSpec)
    return format_errors(errs, "request body", root)
