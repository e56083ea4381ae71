"""The ``labeler`` section of a local config: the reference ("DFT") code and its settings.

``name`` is any labeler of the registry (:func:`dft_adapters.available_labelers`): a built-in
or one an installed distribution declares in the ``pesflow.labelers`` entry-point group; its
class is loaded when the config is parsed, so a broken plug-in is a config error naming the
distribution and entry point. Settings are checked against the backend's settings dataclass
(unknown names and invalid values are refused). Local configs may give operator-only settings (server paths such as
``pseudo_dir``); configs sent to the API use the typed per-backend models of
:mod:`workflows.spec`, which leave those out.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from structure_checks.vocabulary import LABELER_FAILURE_KINDS

from .config_base import _Section

__all__ = ["MOCK_LABELERS", "FaultConfig", "LabelerConfig"]

MOCK_LABELERS = ("emt", "lj", "morse")

FaultKind = Literal[LABELER_FAILURE_KINDS]  # type: ignore[valid-type]
"""A labeler failure kind (the one vocabulary, :mod:`structure_checks.vocabulary`)."""


class FaultConfig(_Section):
    """Injected faults of the mock labelers (robustness tests)."""

    fraction: float = Field(default=0.0, ge=0, le=1, description="Fraction of failing calls.")
    kinds: list[FaultKind] | None = Field(default=None, description="Failure kinds (default: all).")
    seed: int = Field(default=0, description="Seed of the deterministic fault choice.")
    delay: float = Field(default=0.0, ge=0, description="Sleep per calculation, s.")


class LabelerPolicy(_Section):
    """What every ``labeler`` section has besides its backend and settings (the local config's
    :class:`LabelerConfig` and the API's per-backend sections in :mod:`workflows.spec`)."""

    retries: bool = Field(default=True, description="Retry transient failures (RetryPolicy).")
    retry_may_change: list[Literal["smearing"]] = Field(
        default_factory=list,
        description="Settings a retry may change although they change the converged answer "
        "(opt in per key; default none: a retry adds SCF steps and lowers the mixing only). "
        "Each must also be in training.ignore_settings_keys.",
    )
    max_failure_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Stop when more than this fraction of an iteration's labels failed.",
    )


class LabelerConfig(LabelerPolicy):
    """The reference ("DFT") code."""

    name: str = Field(
        default="emt",
        description="Labeler backend: a name of the dft_adapters registry (built-ins and "
        "installed `pesflow.labelers` entry points).",
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="Backend settings.")
    faults: FaultConfig | None = Field(default=None, description="Mock labelers only.")

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> LabelerConfig:
        from dft_adapters import available_labelers, labeler_class

        if self.name not in available_labelers():
            raise ValueError(
                f"unknown labeler {self.name!r}; available: {', '.join(available_labelers())}"
            )
        if self.faults is not None and self.name not in MOCK_LABELERS:
            raise ValueError(f"faults can only be injected into mock labelers {MOCK_LABELERS}")
        try:  # an entry point of another distribution is imported here, at parse time
            cls = labeler_class(self.name)
        except ImportError as exc:  # LabelerLoadError: names the distribution and entry point
            raise ValueError(str(exc)) from None
        names = {f.name for f in dataclasses.fields(cls.settings_cls)}
        unknown = sorted(set(self.settings) - names)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(names), n=1)
            raise ValueError(
                f"unknown setting {unknown[0]!r} for labeler {self.name!r}"
                + (f" — did you mean {hint[0]!r}?" if hint else "")
            )
        policy = (info.context or {}).get("policy")
        if getattr(policy, "mode", None) == "api":  # an API config: the author contract too
            try:
                cls.settings_cls.check_author_settings(self.settings)
            except ValueError as exc:
                raise ValueError(f"settings.{exc}") from None
        try:
            cls.settings_cls(**self.settings)
        except Exception as exc:
            raise ValueError(f"invalid settings for labeler {self.name!r}: {exc}") from None
        return self
