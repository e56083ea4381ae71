"""The ``exploration.on_the_fly`` section of a campaign config (decision record 0010)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .config_base import _Section, omit_null

__all__ = ["STRATEGY", "OnTheFlyConfig", "is_on_the_fly", "update_epochs"]

STRATEGY = "on-the-fly"
"""The ``strategy`` of an on-the-fly selection row."""


def is_on_the_fly(cfg: Any) -> bool:
    """Whether the campaign runs in on-the-fly mode."""
    return getattr(cfg.exploration, "mode", "batch") == "on-the-fly"


def update_epochs(cfg: Any) -> int | None:
    """Epochs of an on-the-fly model update (``None``: the batch loop's own setting)."""
    return cfg.exploration.on_the_fly.update_epochs if is_on_the_fly(cfg) else None


class OnTheFlyConfig(_Section):
    """``exploration.on_the_fly``: the model updates of on-the-fly mode (decision 0010)."""

    update_epochs: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra=omit_null,
        description="Epochs of the warm-start update after each label (default: "
        "training.warm_start_epochs).",
    )
    max_labels: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra=omit_null,
        description="Stop after this many on-the-fly labels (bootstrap labels not counted).",
    )
    max_redos: int = Field(
        default=3,
        ge=0,
        description="Stop a walker whose step stays at/above hi after this many updates.",
    )
