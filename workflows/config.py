"""Campaign configuration: a YAML file validated by pydantic (unknown keys rejected).

Units at this user-facing edge: temperatures K, pressures GPa, MD time steps fs, lengths Å,
force thresholds eV/Å (absolute) or dimensionless (relative), times s.

Every validation problem becomes one :class:`ConfigError` whose message is a single line that
names the file, the key path and the problem, e.g.
``cu.yaml: exploration.walkers[0].temperature: must be > 0 (got -5)`` or
``cu.yaml: exploration.walkers[0]: unknown field 'temperatre' — did you mean 'temperature'?``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "BootstrapConfig",
    "CampaignConfig",
    "CommitteeConfig",
    "ConfigError",
    "ConvergenceConfig",
    "ExecutionConfig",
    "ExplorationConfig",
    "FaultConfig",
    "LabelerConfig",
    "SelectionConfig",
    "StructureSource",
    "TrainingSection",
    "TrustConfig",
    "ValidationSetConfig",
    "WalkerConfig",
    "example_config_text",
    "format_validation_error",
    "load_config",
    "parse_config",
]

MOCK_LABELERS = ("emt", "lj", "morse")


class ConfigError(ValueError):
    """An invalid campaign configuration; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PosFloat = Annotated[float, Field(gt=0)]


# --------------------------------------------------------------------------- structures
class GenerateConfig(_Section):
    """A structure built by ASE: a bulk crystal, optionally cut into a surface slab."""

    element: str = Field(description="Chemical symbol, e.g. 'Cu'.")
    crystal: Literal["fcc", "bcc", "hcp", "sc", "diamond"] = Field(
        default="fcc", description="Crystal structure (ase.build.bulk)."
    )
    lattice_constant: PosFloat | None = Field(
        default=None, description="Lattice constant a, Å (default: ASE's reference value)."
    )
    cubic: bool = Field(default=True, description="Use the conventional cubic cell.")
    repeat: tuple[int, int, int] = Field(
        default=(2, 2, 2), description="Supercell repetitions along a, b, c."
    )
    surface: tuple[int, int, int] | None = Field(
        default=None, description="Miller indices of a surface slab (None: bulk)."
    )
    layers: int = Field(default=4, ge=1, description="Slab layers (surfaces only).")
    vacuum: PosFloat = Field(default=8.0, description="Vacuum on each side of a slab, Å.")

    @field_validator("element")
    @classmethod
    def _element(cls, v: str) -> str:
        from ase.data import atomic_numbers

        if v not in atomic_numbers or v == "X":
            raise ValueError(f"unknown chemical symbol {v!r}")
        return v

    @field_validator("repeat")
    @classmethod
    def _repeat(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 1:
            raise ValueError(f"repetitions must be >= 1 (got {list(v)})")
        return v


class StructureSource(_Section):
    """Initial structures: an ASE-readable file (CIF, POSCAR, extxyz, ...) or a generated one."""

    file: str | None = Field(default=None, description="Path (relative to the config file).")
    index: str = Field(default=":", description="Frames of the file to use (ASE index).")
    generate: GenerateConfig | None = Field(default=None, description="Build with ASE.")

    @model_validator(mode="after")
    def _one_source(self) -> StructureSource:
        if (self.file is None) == (self.generate is None):
            raise ValueError("give exactly one of 'file' or 'generate'")
        return self

    @field_validator("file")
    @classmethod
    def _readable(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not (info.context or {}).get("check_files", True):
            return v
        base = Path((info.context or {}).get("base_dir", "."))
        path = Path(v).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(f"structure file not found: {path}")
        try:
            import ase.io

            frames = ase.io.read(path, index=":")
        except Exception as exc:
            raise ValueError(
                f"cannot read structure file {path}: {type(exc).__name__}: {exc}"
            ) from None
        if not frames:
            raise ValueError(f"structure file {path} holds no structures")
        return str(path.resolve())


# --------------------------------------------------------------------------- labeler
class FaultConfig(_Section):
    """Injected faults of the mock labelers (robustness tests)."""

    fraction: float = Field(default=0.0, ge=0, le=1, description="Fraction of failing calls.")
    kinds: (
        list[
            Literal["scf_unconverged", "crashed", "timeout", "invalid_input", "missing_executable"]
        ]
        | None
    ) = Field(default=None, description="Failure kinds (default: all).")
    seed: int = Field(default=0, description="Seed of the deterministic fault choice.")
    delay: float = Field(default=0.0, ge=0, description="Sleep per calculation, s.")


class LabelerConfig(_Section):
    """The reference ("DFT") code."""

    name: str = Field(default="emt", description="Labeler backend (dft_adapters registry).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Backend settings.")
    faults: FaultConfig | None = Field(default=None, description="Mock labelers only.")
    retries: bool = Field(default=True, description="Retry transient failures (RetryPolicy).")
    max_failure_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Stop when more than this fraction of an iteration's labels failed.",
    )

    @model_validator(mode="after")
    def _known(self) -> LabelerConfig:
        from dft_adapters import available_labelers, labeler_class

        if self.name not in available_labelers():
            raise ValueError(
                f"unknown labeler {self.name!r}; available: {', '.join(available_labelers())}"
            )
        if self.faults is not None and self.name not in MOCK_LABELERS:
            raise ValueError(f"faults can only be injected into mock labelers {MOCK_LABELERS}")
        cls = labeler_class(self.name)
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls.settings_cls)}
        unknown = sorted(set(self.settings) - names)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(names), n=1)
            raise ValueError(
                f"unknown setting {unknown[0]!r} for labeler {self.name!r}"
                + (f" — did you mean {hint[0]!r}?" if hint else "")
            )
        try:
            cls.settings_cls(**self.settings)
        except Exception as exc:
            raise ValueError(f"invalid settings for labeler {self.name!r}: {exc}") from None
        return self


# --------------------------------------------------------------------------- data sets
class BootstrapConfig(_Section):
    """First training set: rattled and strained copies of the initial structures."""

    n_structures: int = Field(default=8, ge=1, description="Number of structures to label.")
    rattle: float = Field(default=0.03, ge=0, description="Gaussian displacement stdev, Å.")
    strain: float = Field(default=0.01, ge=0, lt=0.5, description="Max |isotropic strain|.")


class ValidationSetConfig(_Section):
    """Held-out set labelled once at the start and never trained on."""

    n_structures: int = Field(default=16, ge=1, description="Number of structures.")
    rattle: list[Annotated[float, Field(ge=0)]] = Field(
        default=[0.03, 0.06, 0.1],
        min_length=1,
        description="Displacement stdevs cycled over the set, Å.",
    )
    strain: float = Field(default=0.03, ge=0, lt=0.5, description="Max |isotropic strain|.")


# --------------------------------------------------------------------------- model
class CommitteeConfig(_Section):
    """Committee of native potentials (mlip_core.model.ModelConfig)."""

    n_members: int = Field(default=4, ge=2, description="Committee size K.")
    cutoff: PosFloat = Field(default=5.0, description="Radial cutoff, Å.")
    channels: int = Field(default=32, ge=1, description="Feature channels per atom.")
    n_layers: int = Field(default=1, ge=1, description="Message-passing layers.")
    n_basis: int = Field(default=8, ge=1, description="Radial basis functions.")
    readout_hidden: int = Field(default=32, ge=1, description="Readout MLP width.")


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


# --------------------------------------------------------------------------- exploration
class WalkerConfig(_Section):
    """One MD walker (repeated ``count`` times with different seeds)."""

    temperature: PosFloat = Field(description="Thermostat temperature, K.")
    pressure: float = Field(default=0.0, description="External pressure (npt), GPa.")
    ensemble: Literal["nvt", "npt", "nve"] = Field(default="nvt", description="Ensemble.")
    steps: int = Field(default=500, ge=1, description="MD steps.")
    timestep: PosFloat = Field(default=2.0, le=20, description="Time step, fs.")
    record_every: int = Field(default=10, ge=1, description="Keep a frame every N steps.")
    friction: PosFloat = Field(default=0.01, description="Langevin friction, 1/fs.")
    count: int = Field(default=1, ge=1, description="Walkers with this setting (seeds differ).")
    start: int | None = Field(
        default=None, ge=0, description="Index of the initial structure (default round-robin)."
    )


class ExplorationConfig(_Section):
    """Committee-driven MD of every iteration."""

    walkers: list[WalkerConfig] = Field(min_length=1, description="Walker settings.")
    min_distance: float = Field(default=0.5, ge=0, description="Stop when atoms are closer, Å.")


class TrustConfig(_Section):
    """Trust window on the committee's max atomic force deviation."""

    lo: float = Field(default=0.05, ge=0, description="Below: accurate (eV/Å or relative).")
    hi: PosFloat = Field(default=0.5, description="At/above: model lost, walker cut.")
    relative: bool = Field(default=False, description="Thresholds on the relative deviation.")

    @model_validator(mode="after")
    def _order(self) -> TrustConfig:
        if self.lo >= self.hi:
            raise ValueError(f"lo must be < hi (got lo={self.lo}, hi={self.hi})")
        return self


class SelectionConfig(_Section):
    """Which candidates are labelled."""

    max_per_iteration: int = Field(default=16, ge=1, description="Cap on new labels.")
    strategy: Literal["random", "max-first", "fps"] = Field(default="fps", description="Selector.")
    min_distance: float = Field(
        default=0.0, ge=0, description="Skip near-duplicates closer than this in descriptor space."
    )
    label_cut_frames: bool = Field(
        default=True, description="Also offer the frame where a walker was cut (>= hi)."
    )


class ConvergenceConfig(_Section):
    """When the campaign stops."""

    accurate_ratio: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of explored frames below lo."
    )
    patience: int = Field(default=2, ge=1, description="Consecutive iterations meeting it.")
    val_force_rmse: PosFloat | None = Field(
        default=None, description="Also require validation force RMSE below this, eV/Å."
    )
    max_iterations: int = Field(default=10, ge=1, description="Hard cap on iterations.")
    label_budget: int | None = Field(default=None, ge=1, description="Cap on labels requested.")


class DaskConfig(_Section):
    """DaskTaskRunner arguments (prefect-dask)."""

    address: str | None = Field(default=None, description="Existing scheduler address.")
    cluster_class: str | None = Field(default=None, description="e.g. dask_jobqueue.SLURMCluster.")
    cluster_kwargs: dict[str, Any] = Field(default_factory=dict, description="Cluster arguments.")
    adapt_kwargs: dict[str, Any] | None = Field(default=None, description="Adaptive scaling.")


class ExecutionConfig(_Section):
    """Where tasks run."""

    task_runner: Literal["threads", "dask"] = Field(default="threads", description="Runner.")
    max_workers: int = Field(default=2, ge=1, description="Thread-pool size.")
    dask: DaskConfig | None = Field(default=None, description="Dask runner settings.")
    label_slots: int | None = Field(
        default=None,
        ge=1,
        description="Labels in flight (running or queued in the task runner); a slot is "
        "refilled as soon as its label finishes. Default: twice the runner's concurrency "
        "(max_workers, or the Dask cluster's worker threads when the config gives them), "
        "else 16.",
    )


class CampaignConfig(_Section):
    """A whole active-learning campaign."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Campaign name (letters, digits, _ . -).",
    )
    seed: int = Field(default=0, description="Seeds generation, MD and selection.")
    structures: list[StructureSource] = Field(min_length=1, description="Initial structures.")
    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    validation: ValidationSetConfig = Field(default_factory=ValidationSetConfig)
    committee: CommitteeConfig = Field(default_factory=CommitteeConfig)
    training: TrainingSection = Field(default_factory=TrainingSection)
    exploration: ExplorationConfig
    trust: TrustConfig = Field(default_factory=TrustConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _starts(self) -> CampaignConfig:
        for i, w in enumerate(self.exploration.walkers):
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


# --------------------------------------------------------------------------- errors
def _unwrap(tp: Any) -> type[BaseModel] | None:
    """The pydantic model class inside an annotation (Optional / list / tuple), if any."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        for arg in typing.get_args(tp):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = root
    for part in loc:
        if cls is None:
            return None
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        cls = _unwrap(field.annotation)
    return cls


def _path(loc: tuple[Any, ...]) -> str:
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


_PYDANTIC_TAG = re.compile(r"^[a-z][a-z0-9_-]*\[.*\]$")  # e.g. "function-after[_check(), X]"


def _one_error(err: dict[str, Any], root: type[BaseModel]) -> str:
    kind = err["type"]
    raw = tuple(err["loc"])
    if kind == "extra_forbidden" and raw:
        # the unknown key is the last element, whatever it looks like; tags only in the path
        raw_parent, key = raw[:-1], raw[-1]
    else:
        raw_parent, key = raw, None
    # drop pydantic's union/validator tags from the location
    loc = tuple(p for p in raw_parent if not (isinstance(p, str) and _PYDANTIC_TAG.match(p)))
    if key is not None:
        loc = (*loc, key)
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden" and loc:
        parent = _model_at(root, loc[:-1])
        where = _path(loc[:-1]) or "top level"
        msg = f"{where}: unknown field {str(loc[-1])!r}"
        if parent is not None:
            hint = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1)
            if hint:
                msg += f" — did you mean {hint[0]!r}?"
            else:
                msg += f" (allowed: {', '.join(parent.model_fields)})"
        return msg
    where = _path(loc) or "top level"
    if kind == "missing":
        return f"{where}: required field missing"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"{where}: must be {op} {ctx.get(key)}{_got(value)}"
    if kind == "literal_error":
        return f"{where}: must be one of {ctx.get('expected')}{_got(value)}"
    if kind == "value_error":
        return f"{where}: {ctx.get('error', err['msg'])}".replace("top level: ", "")
    msg = str(err["msg"])
    msg = msg[:1].lower() + msg[1:]
    return f"{where}: {msg}{_got(value)}"


def format_validation_error(
    exc: ValidationError, source: str = "config", root: type[BaseModel] | None = None
) -> str:
    """One line: ``<source>: <key path>: <problem>`` (+ how many more problems)."""
    root = root or CampaignConfig
    # A typo shows up as "unknown field" plus "required field missing": name the typo.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = _one_error(errors[0], root) if errors else str(exc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return " ".join(f"{source}: {first}{more}".split())


def parse_config(
    data: Any, *, source: str = "config", base_dir: str | Path = ".", check_files: bool = True
) -> CampaignConfig:
    """Validate a config mapping; raise :class:`ConfigError` with a one-line message.

    ``check_files=False`` skips reading structure files (a stored snapshot, whose structures
    are already in the database)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the config must be a mapping of sections, got {type(data).__name__}"
        )
    try:
        return CampaignConfig.model_validate(
            data, context={"base_dir": str(base_dir), "check_files": check_files}
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a YAML campaign config (relative paths are relative to its folder)."""
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
    return parse_config(data, source=source, base_dir=path.parent.absolute())


def example_config_text() -> str:
    """The example campaign (Cu with the EMT oracle), as written by ``pesflow init``."""
    return (Path(__file__).parent / "templates" / "cu_emt.yaml").read_text()
