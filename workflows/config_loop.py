"""The validation, selection and convergence sections of a campaign config: what is held out,
what is labelled, and when the campaign stops (units: eV/Å)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from .config_base import PosFloat, _Section

__all__ = ["VAL_FORCE_RMSE_MAX", "ConvergenceConfig", "SelectionConfig", "ValidationSetConfig"]


class ValidationSetConfig(_Section):
    """Held-out set, never trained on: rattled and strained copies of the initial structures
    drawn per regime at the start, plus a share of each iteration's selected frames.

    Rule: with R regimes (the distinct :meth:`StructureSource.regime_name` of the structure
    sources, in order of first appearance), regime r gets ``n_structures // R`` frames, the
    first ``n_structures % R`` regimes one more; every regime must get at least
    ``min_per_regime`` (else the config is refused). Within a regime the copies cycle over its
    structures and over ``rattle``."""

    n_structures: int = Field(default=16, ge=1, description="Number of structures in all.")
    min_per_regime: int = Field(
        default=1,
        ge=1,
        description="Fewest validation structures of one regime (the examples ask for 4).",
    )
    rattle: list[Annotated[float, Field(ge=0)]] = Field(
        default=[0.03, 0.06, 0.1],
        min_length=1,
        description="Displacement stdevs cycled over the set, Å.",
    )
    strain: float = Field(default=0.03, ge=0, lt=0.5, description="Max |isotropic strain|.")
    holdout_fraction: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="Share of each regime's selected (explored) frames labelled as validation "
        "and never trained on (0 disables; over the campaign, per regime, rounded).",
    )


class SelectionConfig(_Section):
    """Which candidates are labelled."""

    max_per_iteration: int = Field(default=16, ge=1, description="Cap on new labels.")
    strategy: str = Field(
        default="fps",
        description="Selector: random, max-first, fps or any registered one (entry-point "
        "group pesflow.selectors).",
    )
    min_distance: float = Field(
        default=0.0, ge=0, description="Skip near-duplicates closer than this in descriptor space."
    )
    label_cut_frames: bool = Field(
        default=True, description="Also offer the frame where a walker was cut (>= hi)."
    )
    max_candidate_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Adaptive lower trust level: at most this share of an iteration's frames "
        "below hi stay candidates (lo rises to the deviations the committee produces; "
        "mlip_core.selection.adaptive_lower_level). None: the configured lo only.",
    )

    @field_validator("strategy")
    @classmethod
    def _registered(cls, value: str) -> str:
        from mlip_core.selectors import get_selector

        get_selector(value)  # PluginError (a ValueError) names the known ones
        return value


VAL_FORCE_RMSE_MAX = 5.0
"""eV/Å: a validation force-error target above this is a unit slip (meV/Å)."""


class ConvergenceConfig(_Section):
    """When the campaign stops: converged when the committee agrees (``accurate_ratio`` for
    ``patience`` iterations) and, if ``val_force_rmse`` is set, every regime's validation force
    RMSE is at most that target (agreement alone is not accuracy)."""

    accurate_ratio: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of explored frames below lo."
    )
    patience: int = Field(default=2, ge=1, description="Consecutive iterations meeting it.")
    val_force_rmse: PosFloat | None = Field(
        default=None,
        allow_inf_nan=False,
        json_schema_extra={"maximum": VAL_FORCE_RMSE_MAX},
        description="Also require every regime's validation force RMSE at most this, eV/Å "
        "(e.g. 0.05; default: agreement alone).",
    )
    max_iterations: int = Field(default=10, ge=1, description="Hard cap on iterations.")
    label_budget: int | None = Field(default=None, ge=1, description="Cap on labels requested.")

    @field_validator("val_force_rmse")
    @classmethod
    def _unit(cls, value: float | None) -> float | None:
        if value is not None and value > VAL_FORCE_RMSE_MAX:
            raise ValueError(
                f"{value:g} eV/Å is no accuracy target (above {VAL_FORCE_RMSE_MAX:g} eV/Å); "
                f"given in meV/Å? ({value / 1000:g} eV/Å)"
            )
        return value
