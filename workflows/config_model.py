"""The model and training sections of a campaign config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .config_base import ConfigError, PosFloat, _Section

__all__ = ["ModelSection", "RepulsionSection", "TrainingSection", "stored_snapshot"]


class RepulsionSection(_Section):
    """The physics baseline under the learned energy (:mod:`mlip_core.repulsion`): the ZBL
    screened nuclear repulsion (Ziegler, Biersack, Littmark 1985) switched off smoothly between
    an inner and an outer radius per element pair; the committee learns the residual.
    ``model: {repulsion: null}`` (or ``{kind: none}``) switches it off."""

    kind: Literal["zbl", "none"] = Field(
        default="zbl", description="Baseline: zbl, or none (off, as repulsion: null)."
    )
    inner_scale: PosFloat = Field(
        default=0.5,
        description="Default inner radius (full repulsion below) as a multiple of the sum of "
        "the pair's covalent radii (Cu-Cu: 0.5 x 2.64 = 1.32 Å).",
    )
    outer_scale: PosFloat = Field(
        default=0.75,
        description="Default outer radius (no repulsion above) as a multiple of the sum of the "
        "pair's covalent radii (Cu-Cu: 0.75 x 2.64 = 1.98 Å); at most the cutoff.",
    )
    pairs: dict[str, tuple[PosFloat, PosFloat]] = Field(
        default_factory=dict,
        description="Radii [inner, outer] in Å per element pair replacing the defaults, "
        "e.g. {Cu-Au: [1.3, 2.0]}.",
    )

    @field_validator("pairs")
    @classmethod
    def _pair_names(cls, pairs: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        from mlip_core.repulsion import pair_key

        seen: dict[tuple[int, int], str] = {}
        for name, (r_in, r_out) in pairs.items():
            key = pair_key(name)  # ValueError naming the pair
            if key in seen:
                raise ValueError(f"pair {name!r} is given twice (also as {seen[key]!r})")
            seen[key] = name
            if r_in >= r_out:
                raise ValueError(
                    f"pair {name!r}: inner radius {r_in} Å must be below the outer radius {r_out} Å"
                )
        return pairs

    @model_validator(mode="after")
    def _scales(self) -> RepulsionSection:
        if self.inner_scale >= self.outer_scale:
            raise ValueError(
                f"inner_scale {self.inner_scale} must be below outer_scale {self.outer_scale}"
            )
        return self


class ModelSection(_Section):
    """The committee: a model backend (:mod:`mlip_core.backends`), its size and cutoff, and the
    backend's own hyper-parameters as further keys (checked by the backend: ``native`` takes
    ``channels``, ``n_layers``, ``n_basis``, ``readout_hidden``; ``mace`` takes MACE's names,
    :class:`mlip_core.mace_training.MaceOptions`), and ``repulsion``, the physics baseline
    (:class:`RepulsionSection`). A config's old ``committee:`` section is read as
    ``model: {backend: native, ...}``."""

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

    repulsion: RepulsionSection | None = Field(
        default_factory=RepulsionSection,
        description="Physics baseline added to every member (ZBL repulsion, on by default); "
        "null or {kind: none} switches it off.",
    )

    @field_validator("repulsion", mode="before")
    @classmethod
    def _none_is_off(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("kind") == "none":
            if set(value) != {"kind"}:
                raise ValueError("kind none (no baseline) takes no other keys")
            return None
        return value

    def build_repulsion(self, species: list[int]) -> Any:
        """The baseline for the campaign's ``species`` (a
        :class:`mlip_core.repulsion.ZBLRepulsion`), or None when switched off.

        Raises:
            ConfigError: a default outer radius above the cutoff (names the pair).
        """
        if self.repulsion is None:
            return None
        from mlip_core.repulsion import ZBLRepulsion

        rep = self.repulsion
        try:
            return ZBLRepulsion(
                species,
                pairs=dict(rep.pairs),
                inner_scale=rep.inner_scale,
                outer_scale=rep.outer_scale,
                cutoff=self.cutoff,
            )
        except ValueError as exc:
            raise ConfigError(f"model.repulsion: {exc}") from None

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

    @model_validator(mode="after")
    def _radii_within_cutoff(self) -> ModelSection:
        for name, (_, r_out) in (self.repulsion.pairs if self.repulsion else {}).items():
            if r_out > self.cutoff:
                raise ValueError(
                    f"repulsion.pairs.{name}: outer radius {r_out} Å exceeds the cutoff "
                    f"{self.cutoff} Å"
                )
        return self


def stored_snapshot(stored: dict[str, Any]) -> dict[str, Any]:
    """A campaign config stored before a default was added, as it ran then: a ``model`` (or
    older ``committee``) section without ``repulsion`` was trained without the baseline, so it
    gets ``repulsion: None``. Apply to every stored snapshot before ``parse_config``; a config
    a user writes now is not passed through here (its default is the baseline)."""
    out = dict(stored)
    for key in ("model", "committee"):
        section = out.get(key)
        if isinstance(section, dict) and "repulsion" not in section:
            out[key] = {**section, "repulsion": None}
    if "model" not in out and "committee" not in out:
        out["model"] = {"repulsion": None}
    return out


AUTO_STRESS_WEIGHT = 10.0
"""``training.stress_weight: auto`` on periodic cells with stress labels. Measured on Cu EMT (24
rattled, strained 32-atom cells, 2 members, 150 epochs, energy_weight 100; 16 held-out cells),
weights 0 / 1 / 10 / 100 / 1000: force RMSE 39.1 / 38.3 / 37.7 / 52.5 / 111.6 meV/Å, stress
RMSE 0.233 / 0.194 / 0.139 / 0.153 / 0.350 GPa: 10 gives the lowest stress error (-40 %) and
no force penalty."""


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
    stress_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] | Literal["auto"] = Field(
        default="auto",
        description="Weight of the virial-per-atom term, (eV/atom)^-2 like energy_weight; "
        f"'auto': {AUTO_STRESS_WEIGHT:g} when training labels of periodic cells carry stress, "
        "else 0; 0 disables it (structures without a stress label never enter it).",
    )
    val_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of labels held out for early stopping."
    )
    ignore_settings_keys: list[str] = Field(
        default_factory=list,
        description="Labeler settings whose values may differ between the labels of one "
        "training set (e.g. smearing raised by a retry); labels computed with other settings "
        "than requested in any other key are refused.",
    )

    def stress_weight_for(self, structures: Any) -> float:
        """The stress weight of a training on ``structures`` (``ase.Atoms`` with ``REF_*``
        labels): ``stress_weight`` as given, or for ``auto`` :data:`AUTO_STRESS_WEIGHT` when
        one of them is a periodic cell with a stress label, else 0."""
        from structure_checks.vocabulary import REF_STRESS

        if self.stress_weight != "auto":
            return float(self.stress_weight)
        labelled = any(REF_STRESS in a.info and bool(a.pbc.all()) for a in structures)
        return AUTO_STRESS_WEIGHT if labelled else 0.0

    def settings(
        self,
        structures: Any,
        *,
        warm: bool,
        seed: int,
        max_epochs: int | None = None,
        max_time_s: float | None = None,
        stop_after_epochs: int | None = None,
    ) -> Any:
        """The :class:`mlip_core.training.TrainingConfig` of one training on ``structures``:
        from scratch or (``warm``) fine-tuning the previous committee, with ``max_epochs`` /
        ``max_time_s`` overriding this section's and ``stop_after_epochs`` replaying a run a
        time cap stopped (no time cap then)."""
        from mlip_core.training import TrainingConfig

        return TrainingConfig(
            max_epochs=max_epochs or (self.warm_start_epochs if warm else self.max_epochs),
            max_time_s=None if stop_after_epochs else (max_time_s or self.max_time_s),
            stop_after_epochs=stop_after_epochs,
            batch_size=self.batch_size,
            learning_rate=self.warm_start_learning_rate if warm else self.learning_rate,
            patience=self.patience,
            energy_weight=self.energy_weight,
            stress_weight=self.stress_weight_for(structures),
            val_fraction=self.val_fraction,
            seed=seed,
        )
