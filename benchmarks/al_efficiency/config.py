"""The benchmark YAML: a campaign config (the product's schema) plus the benchmark's settings.

:func:`load_bench_config` reads both and makes the campaign self-contained and comparable:
its initial structures (and the benchmark's extra exploration starts) become inline extended
XYZ ``content`` entries with their regime names, and its ``convergence`` section is replaced so that every arm runs the
same number of iterations. :func:`arm_config` then derives each arm's campaign by changing
only the ``selection`` section (and the campaign ``seed``, the same for every arm of a seed).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workflows.config import CampaignConfig, ConfigError, format_validation_error, parse_config

__all__ = [
    "ARMS",
    "BenchConfig",
    "MaterialConfig",
    "StartsConfig",
    "TestSetConfig",
    "arm_config",
    "exploration_starts",
    "load_bench_config",
]

ARMS = ("fps", "max-first", "random")
"""The default arms: selection strategies of the product (``selection.strategy``)."""

ARM_VARIANTS: dict[str, dict[str, Any]] = {
    # random among every frame committee-driven MD recorded (cut walkers' frames at or above
    # hi excepted): the committee's uncertainty plays no part in the choice
    "random-all": {"selection": {"strategy": "random"}, "trust": {"lo": 0.0}},
    # the model backend: a committee of 2 GAP fits (mlip_core.gap_backend; SOAP + 2-body,
    # cutoff 5 Å as the native model's, small SOAP/sparse sizes so that a refit on ~60 Cu
    # cells takes seconds); its uncertainty is the GP predictive sd of the local energy, eV,
    # so the trust window is in eV (lo 2 meV: a GP's sd on Cu's own cells; hi 1 eV: a walker
    # is cut only when lost). Selection (fps) and everything else as the headline arm.
    "gap": {
        "model": {
            "backend": "gap",
            "n_members": 2,
            "cutoff": 5.0,
            "l_max": 4,
            "n_max": 6,
            "n_sparse": 100,
            "n_sparse_2b": 15,
        },
        "trust": {"lo": 0.002, "hi": 1.0},
    },
    # the exploration mode (decision 0010): each walker runs its steps once, as one long MD
    # over the whole campaign that pauses to label each step at/above lo (redone after the
    # update at/above hi); each iteration is one segment per walker and a warm-start update
    # of training.warm_start_epochs. Same walkers (md only: any other kind is refused), trust
    # window and iterations as the batch arms; selection is the paused frames.
    "on-the-fly": {"exploration": {"mode": "on-the-fly"}},
}
"""Arms that are a campaign with more than ``selection.strategy`` changed (merged into the
shared campaign; a ``model`` with a ``backend`` replaces the whole model section, since another
backend's hyper-parameters do not apply)."""

ORACLE_MD = "oracle-md"
"""The arm without the product's loop: random frames of oracle-driven MD
(:mod:`benchmarks.al_efficiency.oracle_md`)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaterialConfig(_Section):
    """The crystal the test set, the extra starts and the property checks are built from."""

    element: str = "Cu"
    crystal: Literal["fcc", "bcc"] = "fcc"
    lattice_constant: float = Field(default=3.61, gt=0, description="Å.")


class TestSetConfig(_Section):
    """Held-out structures labelled by the oracle (regimes: bulk MD, vacancy, strain, surface).

    Frames come from oracle-driven Langevin MD: ``frames`` per regime, ``stride`` steps apart
    after ``equilibration`` steps, time step 2 fs. Temperatures in K, strains dimensionless.
    """

    bulk_repeat: int = Field(default=3, ge=1, description="Bulk cell: cubic cell repeated.")
    temperatures: list[float] = Field(default=[300.0, 900.0, 1500.0])
    vacancy_temperature: float = Field(default=900.0, gt=0)
    strains: list[float] = Field(default=[-0.02, 0.02], description="Isotropic strains.")
    strain_temperature: float = Field(default=600.0, gt=0)
    surface: tuple[int, int, int] = (1, 1, 1)
    surface_size: tuple[int, int, int] = (3, 3, 4)
    surface_temperature: float = Field(default=600.0, gt=0)
    melt_temperature: float | None = Field(
        default=2500.0, gt=0, description="Bulk MD far above melting (None: no melt regime)."
    )
    melt_equilibration: int = Field(
        default=1000, ge=0, description="Steps before the melt's first frame (2 fs each)."
    )
    frames: int = Field(default=6, ge=1, description="Test frames per regime.")
    validation_frames: int = Field(
        default=4,
        ge=1,
        description="Validation frames per regime (fit the calibration: a 90 % bound per "
        "regime needs >= 9 over the seeds).",
    )
    stride: int = Field(default=20, ge=1)
    equilibration: int = Field(default=60, ge=0)


class StartsConfig(_Section):
    """Exploration starts added to the campaign's initial structures (walkers and bootstrap
    copies cycle through all of them, as in any campaign)."""

    vacancy: bool = Field(default=True, description="The first structure minus one atom.")
    surface: tuple[int, int, int] | None = Field(default=(1, 1, 1))
    surface_size: tuple[int, int, int] = (2, 2, 4)


class BenchConfig(_Section):
    """The benchmark YAML (see ``examples/bench_cu_emt.yaml``)."""

    name: str = Field(default="al-efficiency", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    campaign: str = Field(description="Campaign YAML (relative to this file).")
    campaign_overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default=[0, 1], min_length=1, description="Campaign seeds.")
    iterations: int = Field(
        default=6, ge=1, description="Retrainings after the first committee (curve points - 1)."
    )
    arms: list[str] = Field(
        default=list(ARMS),
        min_length=1,
        description="Selection strategies, one campaign each; the first is the headline arm.",
    )
    baseline: str = Field(default="random", description="The arm the headline compares with.")
    target_force_rmse: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="Per-regime test force RMSE target, eV/Å: oracle calls to reach it are "
        "the headline.",
    )
    material: MaterialConfig = Field(default_factory=MaterialConfig)
    starts: StartsConfig = Field(default_factory=StartsConfig)
    test_set: TestSetConfig = Field(default_factory=TestSetConfig)
    properties: bool = True
    workers: int = Field(default=2, ge=1, description="Parallel processes (arm x seed runs).")
    report_dir: str = Field(default="reports/al-efficiency")
    calibration_bins: int = Field(default=8, ge=2)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _extxyz(atoms: Any) -> str:
    from ase.io import write

    buf = io.StringIO()
    atoms = atoms.copy()
    atoms.info = {}  # e.g. a slab's adsorbate_info: not a structure's state
    write(buf, atoms, format="extxyz")
    return buf.getvalue()


def _surface(element: str, size: tuple[int, int, int], a: float, miller: tuple[int, ...]) -> Any:
    from ase.build import fcc100, fcc110, fcc111

    builder = {(1, 1, 1): fcc111, (1, 0, 0): fcc100, (1, 1, 0): fcc110}.get(tuple(miller))
    if builder is None:
        raise ConfigError(f"surface {tuple(miller)} not supported (111, 100, 110)")
    slab = builder(element, size, a=a, vacuum=6.0)
    slab.pbc = (True, True, False)
    return slab


def _starts(bench: BenchConfig, campaign: CampaignConfig, base_dir: Path) -> list[tuple[Any, str]]:
    """The campaign's initial structures plus the benchmark's starts (``ase.Atoms``), each
    with its regime name (the campaign's own, then ``vacancy`` and ``surface-<hkl>``)."""
    from workflows.config import StructurePolicy
    from workflows.steps import initial_structures

    regimes: list[str] = []
    starts = initial_structures(campaign, StructurePolicy.local(base_dir), regimes=regimes)
    out = list(zip(starts, regimes, strict=True))
    if bench.starts.vacancy:
        v = starts[0].copy()
        del v[0]
        out.append((v, "vacancy"))
    if bench.starts.surface is not None and bench.material.crystal == "fcc":
        m = bench.material
        slab = _surface(
            m.element, bench.starts.surface_size, m.lattice_constant, bench.starts.surface
        )
        out.append((slab, "surface-" + "".join(map(str, bench.starts.surface))))
    return out


def load_bench_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[BenchConfig, CampaignConfig]:
    """Read the benchmark YAML (with optional ``overrides`` merged in) and its campaign.

    The returned campaign is the one every arm shares: ``campaign_overrides`` merged in, the
    structures as inline extxyz ``content`` (initial structures, then the vacancy and slab
    starts), and ``convergence`` fixed to exactly ``iterations + 1`` product iterations (the
    product trains at the start of each, so the last one's labels are never trained on).

    Raises :class:`~workflows.config.ConfigError` (one line, naming the key) on bad input,
    including an arm that is not a selection strategy of the product.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: YAML syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: the benchmark config must be a mapping")
    data = _merge(data, overrides or {})
    try:
        bench = BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path.name)) from None
    if bench.baseline not in bench.arms:
        raise ConfigError(f"{path.name}: baseline {bench.baseline!r} is not one of the arms")
    cpath = (path.parent / bench.campaign).resolve()
    try:
        cdata = yaml.safe_load(cpath.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path.name}: campaign: {cpath}: no such file") from None
    source = f"{path.name} (campaign)"
    cdata = _merge(cdata, bench.campaign_overrides)
    first = parse_config(cdata, source=source, base_dir=cpath.parent)
    n = bench.iterations + 1
    cdata["structures"] = [
        {"content": _extxyz(a), "format": "extxyz", "regime": regime}
        for a, regime in _starts(bench, first, cpath.parent)
    ]
    cdata["convergence"] = {
        "accurate_ratio": 1.0,
        "patience": n,
        "max_iterations": n,
        "label_budget": None,
        "val_force_rmse": None,
    }
    campaign = parse_config(cdata, source=source, base_dir=cpath.parent)
    for arm in bench.arms:
        arm_config(campaign, arm, bench.seeds[0])  # every arm is a valid selection
    return bench, campaign


def arm_config(campaign: CampaignConfig, arm: str, seed: int) -> CampaignConfig:
    """The campaign of one arm: ``selection.strategy = arm`` (or the sections of an
    :data:`ARM_VARIANTS` entry) and ``seed``, nothing else changed; :data:`ORACLE_MD` gets the
    shared campaign with ``seed`` (its exploration is not the product's). Raises
    :class:`ConfigError` naming ``selection.strategy`` for an unknown arm."""
    data = campaign.model_dump(mode="json")
    if arm in ARM_VARIANTS:
        variant = ARM_VARIANTS[arm]
        if "backend" in variant.get("model", {}):
            data["model"] = {}
        data = _merge(data, variant)
    elif arm != ORACLE_MD:
        data["selection"] = {**data["selection"], "strategy": arm}
    data["seed"] = int(seed)
    return parse_config(data, source=f"arm {arm!r}", check_files=False)


def exploration_starts(campaign: CampaignConfig) -> list[Any]:
    """The structures of a campaign from :func:`load_bench_config` (inline extxyz contents)
    as ``ase.Atoms``: the exploration starts, in the order walkers cycle through them."""
    from ase.io import read

    return [read(io.StringIO(s.content), format="extxyz") for s in campaign.structures]
