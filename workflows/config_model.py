"""The model and training sections of a campaign config."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from .config_base import PosFloat, _Section

__all__ = ["ModelSection", "TrainingSection"]


class ModelSection(_Section):
    """The committee: a model backend (:mod:`mlip_core.backends`), its size and cutoff, and the
    backend's own hyper-parameters as further keys (checked by the backend: ``native`` takes
    ``channels``, ``n_layers``, ``n_basis``, ``readout_hidden``; ``mace`` takes MACE's names,
    :class:`mlip_core.mace_training.MaceOptions`). A config's old ``committee:`` section is
    read as ``model: {backend: native, ...}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    backend: str = Field(
        default="native",
        description="Model backend: native, mace or any registered one (entry-point group "
        "pesflow.models).",
    )
    n_members: int = Field(default=4, ge=2, description="Committee size K.")
    cutoff: float = Field(
        default=5.0,
        ge=1.5,
        le=15.0,
        description="Radial cutoff, Å (1.5-15: below 1.5 Å no neighbor shell, above 15 Å "
        "a neighbor list of thousands per atom).",
    )

    @property
    def options(self) -> dict[str, Any]:
        """The backend's hyper-parameters with its defaults filled in."""
        from mlip_core.backends import get_backend

        return get_backend(self.backend).check_options(dict(self.model_extra or {}))

    @model_validator(mode="after")
    def _backend_options(self) -> ModelSection:
        from mlip_core.backends import get_backend

        get_backend(self.backend).check_options(dict(self.model_extra or {}))
        return self


class TrainingSection(_Section):
    """Training of each committee (mlip_core.training.TrainingConfig)."""

    max_epochs: int = Field(default=150, ge=1, description="Epochs of the first committee.")
    max_time_s: PosFloat | None = Field(default=60.0, description="Time budget per training, s.")
    warm_start: bool = Field(default=True, description="Fine-tune the previous committee.")
    warm_start_epochs: int = Field(default=80, ge=1, description="Epochs when warm-starting.")
    learning_rate: PosFloat = Field(default=5e-3, description="Initial Adam learning rate.")
    warm_start_learning_rate: PosFloat = Field(
        default=2e-3, description="Initial learning rate when fine-tuning the previous committee."
    )
    batch_size: int = Field(default=4, ge=1, description="Structures per optimiser step.")
    patience: int = Field(default=25, ge=1, description="Early-stopping patience, epochs.")
    energy_weight: float = Field(default=100.0, ge=0, description="Per-atom energy weight.")
    val_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of labels held out for early stopping."
    )
    ignore_settings_keys: list[str] = Field(
        default_factory=list,
        description="Labeler settings whose values may differ between the labels of one "
        "training set (e.g. smearing raised by a retry); labels computed with other settings "
        "than requested in any other key are refused.",
    )
