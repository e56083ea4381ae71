"""Campaign configuration: a YAML file validated by pydantic (unknown keys rejected).

Units at this user-facing edge: temperatures K, pressures GPa, MD time steps fs, lengths Å,
force thresholds eV/Å (absolute) or dimensionless (relative), times s.

A config is data: nothing in it is imported, executed, opened as an arbitrary server path or
used as a network address on behalf of an API client. What a campaign *author* sets (structures,
labeler physics, committee, exploration, trust, selection, convergence) is the science; where
and how it runs is the *operator's* ``execution`` section, named by a profile
(:mod:`workflows.profiles`) or — in a local config run by the operator's CLI — given inline.
:class:`CampaignConfig` is the full (local) config; :class:`workflows.spec.CampaignSpec` the
author's part that the API accepts (also importable from here).

Every validation problem becomes one :class:`ConfigError` whose message is a single line that
names the file, the key path and the problem, e.g.
``cu.yaml: exploration.walkers[0].temperature: must be > 0 (got -5)`` or
``cu.yaml: exploration.walkers[0]: unknown field 'temperatre' — did you mean 'temperature'?``.
The sections live in ``config_base`` (errors), ``config_structures``, ``config_labeler`` and
``config_execution``; everything is importable from this module.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .config_base import ConfigError, _Section, format_errors
from .config_execution import DaskConfig, ExecutionConfig, LabelerExecution, ProfileRef
from .config_exploration import (
    ENERGY_TRUST_MAX,
    TRUST_MAX,
    ExplorationConfig,
    ExplorerWalkerConfig,
    NEBWalkerConfig,
    TrustConfig,
    WalkerConfig,
    WalkerEntry,
)
from .config_labeler import MOCK_LABELERS, FaultConfig, LabelerConfig
from .config_loop import (
    VAL_FORCE_RMSE_MAX,
    ConvergenceConfig,
    SelectionConfig,
    ValidationSetConfig,
)
from .config_model import ModelSection, TrainingSection
from .config_structures import GenerateConfig, StructurePolicy, StructureSource

__all__ = [
    "ENERGY_TRUST_MAX",
    "MOCK_LABELERS",
    "TRUST_MAX",
    "VAL_FORCE_RMSE_MAX",
    "BootstrapConfig",
    "CampaignConfig",
    "ConfigError",
    "ConvergenceConfig",
    "DaskConfig",
    "ExecutionConfig",
    "ExplorationConfig",
    "ExplorerWalkerConfig",
    "FaultConfig",
    "GenerateConfig",
    "LabelerConfig",
    "LabelerExecution",
    "ModelSection",
    "NEBWalkerConfig",
    "ProfileRef",
    "SelectionConfig",
    "StructurePolicy",
    "StructureSource",
    "TrainingSection",
    "TrustConfig",
    "ValidationSetConfig",
    "WalkerConfig",
    "WalkerEntry",
    "example_config_text",
    "format_errors",
    "format_validation_error",
    "load_config",
    "parse_config",
    "public_snapshot",
]


# --------------------------------------------------------------------------- data sets
class BootstrapConfig(_Section):
    """First training set: rattled and strained copies of the initial structures."""

    n_structures: int = Field(default=8, ge=1, description="Number of structures to label.")
    rattle: float = Field(default=0.03, ge=0, description="Gaussian displacement stdev, Å.")
    strain: float = Field(default=0.01, ge=0, lt=0.5, description="Max |isotropic strain|.")


# --------------------------------------------------------------------------- campaign
class _Campaign(_Section):
    """The sections every campaign config has; ``labeler`` and ``execution`` are typed by the
    subclasses (local config or API spec)."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Campaign name (letters, digits, _ . -).",
    )
    seed: int = Field(default=0, description="Seeds generation, MD and selection.")
    structures: list[StructureSource] = Field(min_length=1, description="Initial structures.")
    labeler: BaseModel = Field(default_factory=LabelerConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    validation: ValidationSetConfig = Field(default_factory=ValidationSetConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    exploration: ExplorationConfig
    trust: TrustConfig = Field(default_factory=TrustConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    execution: BaseModel = Field(default_factory=ExecutionConfig)

    @model_validator(mode="before")
    @classmethod
    def _committee_is_model(cls, data: Any) -> Any:
        """Configs written before model backends have a ``committee:`` section (native)."""
        if isinstance(data, dict) and "committee" in data:
            if "model" in data:
                raise ValueError("give either model: or the older committee:, not both")
            committee = data["committee"]
            data = {k: v for k, v in data.items() if k != "committee"}
            if isinstance(committee, dict):
                committee = {"backend": "native", **committee}
            data["model"] = committee
        return data

    @model_validator(mode="after")
    def _reachable(self) -> _Campaign:
        cv = self.convergence
        if cv.patience > cv.max_iterations:
            raise ValueError(
                f"convergence.patience={cv.patience} > max_iterations={cv.max_iterations}: "
                "the campaign could never be declared converged; lower patience"
            )
        seed = self.bootstrap.n_structures + self.validation.n_structures
        if cv.label_budget is not None and cv.label_budget < seed:
            raise ValueError(
                f"convergence.label_budget={cv.label_budget} < bootstrap + validation "
                f"structures ({seed}): spent before the first exploration; raise the budget"
            )
        return self

    @model_validator(mode="after")
    def _relative_needs_a_force_deviation(self) -> _Campaign:
        """A backend that reports its own uncertainty (a GAP's sd, eV) has no force deviation
        to divide by the force: a relative window would fail the first walker."""
        if not self.trust.relative:
            return self
        from mlip_core.backends import get_backend

        unit = getattr(get_backend(self.model.backend), "own_uncertainty", None)
        if unit is not None:
            raise ValueError(
                f"trust.relative: model backend {self.model.backend!r} reports its own "
                f"uncertainty ({unit}), judged absolutely; set relative: false"
            )
        return self

    @model_validator(mode="after")
    def _validation_covers_regimes(self, info: ValidationInfo) -> _Campaign:
        """Every regime gets ``validation.min_per_regime`` frames (not re-checked on a stored
        snapshot, ``{"policy": None}``: a campaign created before the rule keeps running)."""
        if info.context is not None and info.context.get("policy", True) is None:
            return self
        names = list(dict.fromkeys(s.regime_name() for s in self.structures))
        v = self.validation
        if v.n_structures < v.min_per_regime * len(names):
            raise ValueError(
                f"validation.n_structures={v.n_structures} cannot give each of the "
                f"{len(names)} regimes ({', '.join(names)}) min_per_regime={v.min_per_regime} "
                f"frames; raise n_structures to {v.min_per_regime * len(names)} or lower "
                "min_per_regime"
            )
        return self

    @model_validator(mode="after")
    def _retries_trainable(self) -> _Campaign:
        from dft_adapters import labeler_class

        known = {f.name for f in dataclasses.fields(labeler_class(self.labeler.name).settings_cls)}
        unknown = sorted(set(self.training.ignore_settings_keys) - known)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            raise ValueError(
                f"training.ignore_settings_keys: {unknown[0]!r} is not a setting of labeler "
                f"{self.labeler.name!r}" + (f" — did you mean {hint[0]!r}?" if hint else "")
            )
        may = getattr(self.labeler, "retry_may_change", None) or []
        missing = [k for k in may if k not in self.training.ignore_settings_keys]
        if missing:
            raise ValueError(
                f"labeler.retry_may_change lists {missing} but training.ignore_settings_keys "
                "does not: a label retried with another value could not be trained with the "
                "rest; list it in both (its value then does not matter) or in neither"
            )
        return self

    @model_validator(mode="after")
    def _starts(self) -> _Campaign:
        for i, w in enumerate(self.exploration.walkers):
            if not isinstance(w, WalkerConfig):
                try:
                    w.explorer_starts(len(self.structures))
                except ValueError as exc:
                    raise ValueError(f"exploration.walkers[{i}]: {exc}") from None
                continue
            if w.start is not None and w.start >= len(self.structures):
                raise ValueError(
                    f"exploration.walkers[{i}].start={w.start} but only "
                    f"{len(self.structures)} structure source(s) are given"
                )
            if w.ensemble == "npt":
                for s in self.structures:
                    if s.generate is not None and s.generate.surface is not None:
                        raise ValueError(f"exploration.walkers[{i}]: npt needs bulk structures")
        return self


class CampaignConfig(_Campaign):
    """A whole active-learning campaign as a local config (and as stored): the labeler with
    free-form settings checked against the backend, ``execution`` a profile name or inline."""

    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig,
        description="{profile: NAME} (an operator's execution profile) or, in a local config, "
        "the section itself.",
    )


def format_validation_error(
    exc: ValidationError, source: str = "config", root: type[BaseModel] | None = None
) -> str:
    """One line: ``<source>: <key path>: <problem>`` (+ how many more problems); ``root``
    defaults to :class:`CampaignConfig`."""
    return format_errors(exc.errors(), source, root or CampaignConfig)


def parse_config(
    data: Any,
    *,
    source: str = "config",
    base_dir: str | Path = ".",
    check_files: bool = True,
    policy: StructurePolicy | None = None,
) -> CampaignConfig:
    """Validate a config mapping; raise :class:`ConfigError` with a one-line message.

    Structure files and contents are read under ``policy`` (default: the local policy, files
    relative to ``base_dir`` and never inside the settings' data directory).
    ``check_files=False`` reads nothing (a stored snapshot, whose structures are already in
    the database)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the config must be a mapping of sections, got {type(data).__name__}"
        )
    if check_files and policy is None:
        policy = StructurePolicy.local(base_dir)
    try:
        return CampaignConfig.model_validate(
            data, context={"policy": policy if check_files else None}
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path, data_dir: str | Path | None = None) -> CampaignConfig:
    """Read and validate a YAML campaign config (relative paths are relative to its folder;
    structure files inside ``data_dir``, default the settings' data directory, are refused)."""
    path = Path(path)
    source = path.name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            " ".join(f"{source}: YAML syntax error{where}: {problem}".split())
        ) from None
    base = path.parent.absolute()
    policy = StructurePolicy.local(base, data_dir) if isinstance(data, dict) else None
    return parse_config(data, source=source, base_dir=base, policy=policy)


REDACTED = "<set by the operator>"
"""What :func:`public_snapshot` shows instead of an operator's value."""


def public_snapshot(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config as every reader may see it: structure files by their base name, and
    instead of the operator's values (an inline execution section's ``dask`` and
    ``labelers``, operator-only labeler settings such as ``pseudo_dir``) :data:`REDACTED`.
    The stored config is not changed; keys are never dropped."""
    out = dict(config)
    if isinstance(out.get("structures"), list):
        out["structures"] = [
            {**s, "file": Path(str(s["file"])).name} if isinstance(s, dict) and s.get("file") else s
            for s in out["structures"]
        ]
    ex = out.get("execution")
    if isinstance(ex, dict):
        out["execution"] = {
            k: (REDACTED if k in ("dask", "labelers") and v else v) for k, v in ex.items()
        }
    lab = out.get("labeler")
    if isinstance(lab, dict) and isinstance(lab.get("settings"), dict):
        operator: frozenset[str] = frozenset()
        try:
            from dft_adapters import labeler_class

            operator = labeler_class(str(lab.get("name"))).settings_cls.operator_fields()
        except Exception:  # an unknown (e.g. no longer registered) labeler: nothing to know
            pass
        out["labeler"] = {
            **lab,
            "settings": {k: REDACTED if k in operator else v for k, v in lab["settings"].items()},
        }
    return out


def example_config_text() -> str:
    """The example campaign (Cu with the EMT oracle), as written by ``pesflow init``."""
    return (Path(__file__).parent / "templates" / "cu_emt.yaml").read_text()
