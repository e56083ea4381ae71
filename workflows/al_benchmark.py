"""Does active learning save DFT? ``pesflow bench al-efficiency CONFIG``.

Side by side in one run, from the same initial labelled set and with the same exploration and
label budget per iteration, several selection strategies ("arms") grow a training set:

- ``al``: the campaign's configured strategy (``selection.strategy``, e.g. ``fps``) over the
  committee's candidates (``lo <= max force deviation < hi``, plus the frame where a walker was
  cut when ``selection.label_cut_frames``): the product's own selection semantics;
- ``max-first``: the same candidates, highest deviation first, no diversity;
- ``random``: uniformly random among *all* frames the arm's walkers explored (no uncertainty).

Each arm explores with its own committee (same walkers, temperatures, steps and seeds), labels
its picks with the campaign's labeler (the oracle), retrains (warm start, like the campaign) and
is scored on a held-out test set labelled by the same oracle that covers bulk MD at several
temperatures, a vacancy, strained cells and a surface (never trained on). A separate validation
set of the same kinds fits the calibration of the uncertainty.

The loop drives the plain ``mlip_core`` functions directly (no Prefect, no database) with the
semantics of ``workflows.steps`` (train / explore / select / label): initial structures and
bootstrap set from the campaign config, walker seeds per iteration, the trust window, geometry
checks of picked frames, warm-start training settings.

Outputs ``report.json`` (every number) and PNG plots in the report folder; see
:func:`run_benchmark`. ``python -m workflows.al_benchmark CONFIG`` does the same as the CLI.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import CampaignConfig, ConfigError, format_validation_error, parse_config

__all__ = [
    "ARMS",
    "BenchConfig",
    "MaterialConfig",
    "StartsConfig",
    "TestSetConfig",
    "build_test_set",
    "calibration_curve",
    "evaluate",
    "headline",
    "labels_to_reach",
    "load_bench_config",
    "main",
    "mean_curve",
    "reanalyse",
    "run_arm",
    "run_benchmark",
    "summary_lines",
]

ARMS = ("al", "max-first", "random")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "bench_cu_emt.yaml"


# --------------------------------------------------------------------------- config
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaterialConfig(_Section):
    """The crystal the test set, the extra starts and the property checks are built from."""

    element: str = "Cu"
    crystal: Literal["fcc", "bcc"] = "fcc"
    lattice_constant: float = Field(default=3.61, gt=0)


class TestSetConfig(_Section):
    """Held-out structures labelled by the oracle (regimes: bulk MD, vacancy, strain, surface).

    Frames come from oracle-driven Langevin MD: ``frames`` per regime, ``stride`` steps apart
    after ``equilibration`` steps, time step 2 fs.
    """

    bulk_repeat: int = Field(default=3, ge=1, description="Bulk cell: cubic cell repeated.")
    temperatures: list[float] = Field(default=[300.0, 900.0, 1500.0])
    vacancy_temperature: float = Field(default=900.0, gt=0)
    strains: list[float] = Field(default=[-0.02, 0.02], description="Isotropic strains.")
    strain_temperature: float = Field(default=600.0, gt=0)
    surface: tuple[int, int, int] = (1, 1, 1)
    surface_size: tuple[int, int, int] = (3, 3, 4)
    surface_temperature: float = Field(default=600.0, gt=0)
    frames: int = Field(default=6, ge=1, description="Test frames per regime.")
    validation_frames: int = Field(default=3, ge=1, description="Validation frames per regime.")
    stride: int = Field(default=20, ge=1)
    equilibration: int = Field(default=60, ge=0)


class StartsConfig(_Section):
    """Exploration starts added to the campaign's initial structures (walkers round-robin)."""

    vacancy: bool = Field(default=True, description="The first structure minus one atom.")
    surface: tuple[int, int, int] | None = Field(default=(1, 1, 1))
    surface_size: tuple[int, int, int] = (2, 2, 4)


class BenchConfig(_Section):
    """The ``benchmark`` YAML: a campaign config (the product's schema) plus these settings."""

    name: str = Field(default="al-efficiency", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    campaign: str = Field(description="Campaign YAML (relative to this file).")
    campaign_overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default=[0, 1], min_length=1)
    iterations: int = Field(default=6, ge=1)
    labels_per_iteration: int | None = Field(
        default=None, ge=1, description="Default: the campaign's selection.max_per_iteration."
    )
    arms: list[Literal["al", "max-first", "random"]] = Field(default=list(ARMS), min_length=1)
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


def load_bench_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[BenchConfig, CampaignConfig]:
    """Read the benchmark YAML (with optional ``overrides`` merged in) and its campaign.

    Raises :class:`~workflows.config.ConfigError` (one line) on bad input.
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
    cpath = (path.parent / bench.campaign).resolve()
    try:
        cdata = yaml.safe_load(cpath.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path.name}: campaign: {cpath}: no such file") from None
    cdata = _merge(cdata, bench.campaign_overrides)
    campaign = parse_config(cdata, source=f"{path.name} (campaign)", base_dir=cpath.parent)
    return bench, campaign


# --------------------------------------------------------------------------- helpers
def _seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31)


def _labeler(campaign: CampaignConfig) -> Any:
    from .steps import make_labeler

    return make_labeler(campaign)


def _label(labeler: Any, structures: list[Any]) -> list[Any]:
    """Oracle labels attached under REF_* keys; failed labels are dropped (and counted)."""
    from mlip_core.training import attach_labels

    out = []
    for at in structures:
        res = labeler.label(at)
        if not res.ok:
            continue
        out.append(attach_labels(at, res.energy, res.forces, res.stress))
    return out


def _oracle_md(
    atoms: Any,
    calc: Any,
    temperature: float,
    n_frames: int,
    stride: int,
    equilibration: int,
    seed: int,
) -> list[Any]:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    work = atoms.copy()
    work.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(work, temperature, rng=rng)
    Stationary(work)
    dyn = Langevin(
        work, 2.0 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False
    )
    if equilibration:
        dyn.run(equilibration)
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        f = work.copy()
        f.calc = None
        frames.append(f)
    return frames


def build_test_set(
    bench: BenchConfig, campaign: CampaignConfig, *, seed: int, n_frames: int
) -> list[Any]:
    """Oracle-labelled frames per regime (``info['regime']``): bulk at each temperature,
    vacancy, each strain, surface. The oracle's own MD generates them (not the committee's)."""
    from ase.build import bulk, fcc100, fcc110, fcc111
    from ase.calculators.emt import EMT

    from .properties import LabelerCalculator

    m, ts = bench.material, bench.test_set
    labeler = _labeler(campaign)
    calc = EMT() if campaign.labeler.name == "emt" else LabelerCalculator(labeler)
    base = bulk(m.element, m.crystal, a=m.lattice_constant, cubic=True).repeat(ts.bulk_repeat)
    regimes: list[tuple[str, Any, float]] = [(f"bulk-{t:g}K", base, t) for t in ts.temperatures]
    vac = base.copy()
    del vac[0]
    regimes.append(("vacancy", vac, ts.vacancy_temperature))
    for s in ts.strains:
        st = base.copy()
        st.set_cell(st.cell.array * (1 + s), scale_atoms=True)
        regimes.append((f"strain{s:+g}", st, ts.strain_temperature))
    if m.crystal == "fcc":
        builder = {(1, 1, 1): fcc111, (1, 0, 0): fcc100, (1, 1, 0): fcc110}.get(ts.surface)
        if builder is None:
            raise ConfigError(f"test_set.surface {ts.surface} not supported (111, 100, 110)")
        slab = builder(m.element, ts.surface_size, a=m.lattice_constant, vacuum=8.0)
        slab.pbc = (True, True, False)
        regimes.append((f"surface{''.join(map(str, ts.surface))}", slab, ts.surface_temperature))
    out = []
    for r, (name, atoms, temp) in enumerate(regimes):
        frames = _oracle_md(
            atoms, calc, temp, n_frames, ts.stride, ts.equilibration, _seed(seed, "test", r)
        )
        for f in _label(labeler, frames):
            f.info["regime"] = name
            out.append(f)
    return out


def _starts(bench: BenchConfig, campaign: CampaignConfig) -> list[Any]:
    from ase.build import fcc100, fcc110, fcc111

    from .steps import initial_structures

    starts = initial_structures(campaign)
    if bench.starts.vacancy:
        v = starts[0].copy()
        del v[0]
        starts.append(v)
    if bench.starts.surface is not None and bench.material.crystal == "fcc":
        builder = {(1, 1, 1): fcc111, (1, 0, 0): fcc100, (1, 1, 0): fcc110}[bench.starts.surface]
        slab = builder(
            bench.material.element,
            bench.starts.surface_size,
            a=bench.material.lattice_constant,
            vacuum=6.0,
        )
        slab.pbc = (True, True, False)
        starts.append(slab)
    return starts


# --------------------------------------------------------------------------- evaluation
def evaluate(model: Any, structures: list[Any]) -> dict[str, Any]:
    """Committee-mean errors on labelled structures plus per-frame uncertainty and error.

    Returns ``force_rmse`` (eV/Å, over Cartesian components), ``energy_rmse`` (eV/atom), the
    same per regime, and per frame ``max_dev`` (max atomic force deviation, eV/Å) and
    ``max_err`` (max atomic |F_mean - F_ref|, eV/Å).
    """
    from mlip_core.calculator import CommitteeCalculator

    calc = CommitteeCalculator(model, min_distance=0.0)
    f_sq: dict[str, list[float]] = {}
    e_sq: dict[str, list[float]] = {}
    n_comp: dict[str, int] = {}
    devs, errs, regimes = [], [], []
    for at in structures:
        calc.calculate(at, ["energy", "forces"])
        r = calc.results
        df = r["forces"] - at.arrays["REF_forces"]
        de = (r["energy"] - at.info["REF_energy"]) / len(at)
        reg = str(at.info.get("regime", "all"))
        for key in ("all", reg):
            f_sq.setdefault(key, []).append(float(np.sum(df**2)))
            n_comp[key] = n_comp.get(key, 0) + df.size
            e_sq.setdefault(key, []).append(de**2)
        devs.append(float(r["max_force_dev"]))
        errs.append(float(np.max(np.linalg.norm(df, axis=1))))
        regimes.append(reg)
    per = {
        k: {
            "force_rmse": math.sqrt(sum(f_sq[k]) / n_comp[k]),
            "energy_rmse": math.sqrt(float(np.mean(e_sq[k]))),
        }
        for k in f_sq
        if k != "all"
    }
    return {
        "force_rmse": math.sqrt(sum(f_sq["all"]) / n_comp["all"]),
        "energy_rmse": math.sqrt(float(np.mean(e_sq["all"]))),
        "per_regime": per,
        "max_dev": devs,
        "max_err": errs,
        "regime": regimes,
    }


# --------------------------------------------------------------------------- one arm
def _select(
    arm: str, campaign: CampaignConfig, frames: list[Any], max_n: int, seed: int, species: list[int]
) -> list[Any]:
    """Pick this iteration's frames to label (the arm's rule, the product's semantics)."""
    from mlip_core.geometry import check_geometry
    from mlip_core.selection import select_candidates

    cut_ok = campaign.selection.label_cut_frames
    pool = []
    for f in frames:
        dev = f.info.get("uncertainty")
        if dev is None or not np.isfinite(dev) or check_geometry(f):
            continue
        status = f.info.get("status")
        if arm == "random" or status == "candidate" or (status == "failed" and cut_ok):
            pool.append(f)
    if not pool or max_n == 0:
        return []
    devs = np.asarray([float(f.info["uncertainty"]) for f in pool])
    strategy = {"al": campaign.selection.strategy, "max-first": "max-first", "random": "random"}[
        arm
    ]
    min_distance = campaign.selection.min_distance if arm == "al" else 0.0
    desc = None
    if strategy == "fps" or min_distance > 0:
        from mlip_core.descriptors import descriptor_matrix

        desc = descriptor_matrix(pool, species)
    idx = select_candidates(
        np.arange(len(pool)),
        devs,
        max_n,
        strategy,
        seed=seed,
        descriptors=desc,
        min_distance=min_distance,
    )
    return [pool[i] for i in idx]


def _train(
    campaign: CampaignConfig, labelled: list[Any], prev: Any, seed: int, it: int, species: list[int]
) -> Any:
    """Train like ``workflows.steps.train_step``: from scratch first, then warm starts."""
    from mlip_core.model import ModelConfig
    from mlip_core.training import TrainingConfig, train_committee

    cc, tc = campaign.committee, campaign.training
    warm = prev if (tc.warm_start and prev is not None) else None
    tcfg = TrainingConfig(
        max_epochs=tc.warm_start_epochs if warm is not None else tc.max_epochs,
        max_time_s=tc.max_time_s,
        batch_size=tc.batch_size,
        learning_rate=tc.warm_start_learning_rate if warm is not None else tc.learning_rate,
        patience=tc.patience,
        energy_weight=tc.energy_weight,
        val_fraction=tc.val_fraction,
        seed=_seed(seed, "train", it),
    )
    mcfg = ModelConfig(
        species=species,
        cutoff=cc.cutoff,
        channels=cc.channels,
        n_layers=cc.n_layers,
        n_basis=cc.n_basis,
        readout_hidden=cc.readout_hidden,
        n_members=cc.n_members,
        seeds=[_seed(seed, "member", k) for k in range(cc.n_members)],
    )
    return train_committee(
        labelled, tcfg, model=warm, model_config=mcfg, n_members=cc.n_members
    ).model


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    """One arm with one seed: bootstrap -> (train, score, explore, select, label) x iterations.

    ``job`` holds ``bench`` / ``campaign`` (JSON dumps), ``arm``, ``seed``, ``test``,
    ``validation``, ``bootstrap`` (labelled Atoms), ``out_dir`` and optionally
    ``initial_model`` (the committee trained on the bootstrap set, shared by the arms of a
    seed so that they start from the same potential). Returns the learning curve,
    the final per-frame deviations/errors, calibration and property checks.
    """
    import torch

    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.checkpoint import save_committee
    from mlip_core.md import run_walker

    from .steps import walker_spec

    torch.set_num_threads(1)
    bench = BenchConfig.model_validate(job["bench"])
    campaign = CampaignConfig.model_validate(job["campaign"], context={"check_files": False})
    arm, seed = job["arm"], int(job["seed"])
    test, val, labelled = job["test"], job["validation"], list(job["bootstrap"])
    starts = _starts(bench, campaign)
    species = sorted({int(z) for a in starts for z in a.numbers})
    labeler = _labeler(campaign)
    budget = bench.labels_per_iteration or campaign.selection.max_per_iteration
    model = job.get("initial_model")
    curve: list[dict[str, Any]] = []
    t_arm = time.perf_counter()
    for it in range(bench.iterations + 1):
        t0 = time.perf_counter()
        if it > 0 or model is None:
            model = _train(campaign, labelled, model, seed, it, species)
        t_train = time.perf_counter() - t0 if it > 0 else job.get("initial_train_s", 0.0)
        ev = evaluate(model, test)
        point = {
            "iteration": it,
            "n_labels": len(labelled),
            "force_rmse": ev["force_rmse"],
            "energy_rmse": ev["energy_rmse"],
            "per_regime": ev["per_regime"],
            "train_s": t_train,
        }
        from mlip_core.uncertainty import spearman

        rho = spearman(ev["max_dev"], ev["max_err"])
        point["spearman"] = None if math.isnan(rho) else rho
        curve.append(point)
        if it == bench.iterations:
            break
        t1 = time.perf_counter()
        calc = CommitteeCalculator(model, min_distance=campaign.exploration.min_distance or 0.5)
        frames: list[Any] = []
        n_cut = 0
        plans = [
            (ci, c) for ci, w in enumerate(campaign.exploration.walkers) for c in range(w.count)
        ]
        for i, (ci, c) in enumerate(plans):
            w = campaign.exploration.walkers[ci]
            start = starts[w.start if w.start is not None else i % len(starts)]
            spec = walker_spec(campaign, w, _seed(seed, "walk", it, ci, c))
            try:
                res = run_walker(start, calc, spec)
            except Exception:  # a walker that cannot run is data, as in the campaign
                n_cut += 1
                continue
            n_cut += int(res.stopped_early)
            frames.extend(res.frames)
        t_explore = time.perf_counter() - t1
        picked = _select(arm, campaign, frames, budget, _seed(seed, "select", it), species)
        new = _label(labeler, picked)
        labelled.extend(new)
        statuses = [f.info.get("status") for f in frames]
        point.update(
            n_explored=len(frames),
            n_candidate=statuses.count("candidate"),
            n_failed=statuses.count("failed"),
            n_cut=n_cut,
            n_picked=len(picked),
            n_new_labels=len(new),
            explore_s=t_explore,
            picked_mean_dev=float(np.mean([f.info["uncertainty"] for f in picked]))
            if picked
            else None,
        )
    assert model is not None
    final_test = evaluate(model, test)
    final_val = evaluate(model, val)
    out: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "test_max_dev": final_test["max_dev"],
        "test_max_err": final_test["max_err"],
        "test_regime": final_test["regime"],
        "val_max_dev": final_val["max_dev"],
        "val_max_err": final_val["max_err"],
    }
    from mlip_core.uncertainty import fit_calibration

    cal = fit_calibration(final_val["max_dev"], final_val["max_err"], "scale")
    out["calibration"] = cal.to_dict()
    ckpt = Path(job["out_dir"]) / "models" / f"{arm}-seed{seed}.pt"
    save_committee(
        model,
        ckpt,
        {
            "benchmark": bench.name,
            "arm": arm,
            "seed": seed,
            "n_labels": len(labelled),
            "calibration": cal.to_dict(),
        },
    )
    out["checkpoint"] = str(ckpt)
    if bench.properties:
        from .properties import property_checks

        m = bench.material
        t2 = time.perf_counter()
        out["properties"] = property_checks(
            CommitteeCalculator(model, min_distance=0.0), m.element, m.crystal, m.lattice_constant
        )
        out["properties_s"] = time.perf_counter() - t2
    out["wall_s"] = time.perf_counter() - t_arm
    return out


# --------------------------------------------------------------------------- analysis
def mean_curve(runs: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """Geometric mean (``mean``) and spread (min, max, std) over seeds of ``key`` vs labels.

    Seeds may reach different label counts (an arm labels fewer frames when it has fewer
    candidates): each seed's curve is interpolated log-linearly onto the union of label counts
    within the range every seed covers.
    """
    xs = sorted({p["n_labels"] for r in runs for p in r["curve"]})
    lo = max(r["curve"][0]["n_labels"] for r in runs)
    hi = min(r["curve"][-1]["n_labels"] for r in runs)
    grid = [x for x in xs if lo <= x <= hi]
    vals = np.array([[_interp_log(r["curve"], key, x) for x in grid] for r in runs])
    return {
        "n_labels": [float(x) for x in grid],
        "mean": np.exp(np.log(vals).mean(0)).tolist(),
        "min": vals.min(0).tolist(),
        "max": vals.max(0).tolist(),
        "std": vals.std(0).tolist(),
    }


def _interp_log(curve: list[dict[str, Any]], key: str, x: float) -> float:
    xs = np.array([p["n_labels"] for p in curve], dtype=float)
    ys = np.log(np.array([p[key] for p in curve], dtype=float))
    xs, idx = np.unique(xs, return_index=True)
    return float(np.exp(np.interp(x, xs, ys[idx])))


def labels_to_reach(curve: dict[str, list[float]], target: float) -> float | None:
    """First label count where the (log-linear interpolated) mean curve reaches ``target``."""
    x, y = np.asarray(curve["n_labels"]), np.log(np.asarray(curve["mean"]))
    t = math.log(target)
    if y[0] <= t:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] <= t:
            return float(x[i - 1] + (t - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return None


def headline(
    curves: dict[str, dict[str, dict[str, list[float]]]],
    arm: str = "al",
    baseline: str = "random",
    key: str = "force_rmse",
) -> dict[str, Any]:
    """Labels ``arm`` needs to reach ``baseline``'s final error (ratio to the baseline's
    labels, bootstrap set included) and the error ratio at the largest common label count."""
    a, b = curves[arm][key], curves[baseline][key]
    b_final_x, b_final_y = b["n_labels"][-1], b["mean"][-1]
    need = labels_to_reach(a, b_final_y)
    common = min(a["n_labels"][-1], b_final_x)
    ya = float(np.exp(np.interp(common, a["n_labels"], np.log(a["mean"]))))
    yb = float(np.exp(np.interp(common, b["n_labels"], np.log(b["mean"]))))
    out: dict[str, Any] = {
        "metric": key,
        "arm": arm,
        "baseline": baseline,
        "baseline_final_labels": b_final_x,
        "baseline_final_error": b_final_y,
        "arm_final_labels": a["n_labels"][-1],
        "arm_final_error": a["mean"][-1],
        "labels_to_reach": need,
        "labels_ratio": None if need is None else need / b_final_x,
        "reached": need is not None,
        "common_labels": common,
        "error_ratio_at_equal_labels": ya / yb,
    }
    if need is None:
        out["gap_percent"] = 100.0 * (a["mean"][-1] / b_final_y - 1.0)
    by_budget = []
    for x, y in zip(b["n_labels"][1:], b["mean"][1:], strict=True):
        n = labels_to_reach(a, y)
        by_budget.append(
            {
                "baseline_labels": x,
                "baseline_error": y,
                "labels_to_reach": n,
                "labels_ratio": None if n is None else n / x,
            }
        )
    out["by_baseline_budget"] = by_budget
    return out


def calibration_curve(
    devs: list[float], errs: list[float], n_bins: int, scale: float | None = None
) -> list[dict[str, float]]:
    """Bins of predicted max deviation (equal counts): mean deviation, mean and median
    observed max error, and the calibrated prediction (``scale * mean deviation``)."""
    d, e = np.asarray(devs), np.asarray(errs)
    order = np.argsort(d)
    out = []
    for chunk in np.array_split(order, min(n_bins, d.size)):
        if chunk.size == 0:
            continue
        row = {
            "n": int(chunk.size),
            "mean_dev": float(d[chunk].mean()),
            "mean_err": float(e[chunk].mean()),
            "median_err": float(np.median(e[chunk])),
        }
        if scale is not None:
            row["calibrated"] = float(scale * d[chunk].mean())
        out.append(row)
    return out


def _load() -> dict[str, Any]:
    try:
        la = os.getloadavg()
    except OSError:
        la = (float("nan"),) * 3
    return {
        "loadavg_1_5_15": [float(x) for x in la],
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    h = report["headline"]["force"]
    t: dict[str, Any] = {}
    ratio = h["labels_ratio"]
    t["al_labels_ratio_le_0.30"] = {
        "target": 0.30,
        "measured": ratio,
        "met": ratio is not None and ratio <= 0.30,
        "note": "not reached: AL final error is {:+.1f} % vs random's final".format(
            h["gap_percent"]
        )
        if ratio is None
        else f"{ratio:.2f} of random's labels",
    }
    rho = report["uncertainty"]["spearman_test"]
    t["spearman_ge_0.6"] = {"target": 0.6, "measured": rho, "met": rho is not None and rho >= 0.6}
    props = report.get("properties", {}).get("al_vs_oracle")
    if props:
        da = props["lattice_constant"]["diff_percent_mean_abs"]
        db = props["bulk_modulus_GPa"]["diff_percent_mean_abs"]
        t["lattice_constant_within_0.5pct"] = {"target": 0.5, "measured": da, "met": da <= 0.5}
        t["bulk_modulus_within_5pct"] = {"target": 5.0, "measured": db, "met": db <= 5.0}
    return t


def _curves(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    return {
        arm: {
            key: mean_curve([r for r in runs if r["arm"] == arm], key)
            for key in ("force_rmse", "energy_rmse")
        }
        for arm in arms
    }


def _headlines(curves: dict[str, Any]) -> dict[str, Any]:
    if "al" not in curves or "random" not in curves:
        return {}
    out = {
        "force": headline(curves, key="force_rmse"),
        "energy": headline(curves, key="energy_rmse"),
    }
    if "max-first" in curves:
        out["force_max_first_vs_random"] = headline(curves, arm="max-first", key="force_rmse")
    return {"headline": out}


def reanalyse(report_dir: str | Path) -> dict[str, Any]:
    """Recompute the curves, headline, targets and plots of a written report from its own
    per-run numbers (no training or labelling): for analysis changes after a long run."""
    out = Path(report_dir)
    report = json.loads((out / "report.json").read_text())
    report["curves"] = _curves(report["runs"], report["arms"])
    report.update(_headlines(report["curves"]))
    if "headline" in report:
        report["targets"] = _targets(report)
    report["plots"] = _plots(report, out)
    report["reanalysed"] = datetime.now(UTC).isoformat(timespec="seconds")
    (out / "report.json").write_text(json.dumps(_finite(report), indent=1))
    return report


# --------------------------------------------------------------------------- plots
def _plots(report: dict[str, Any], out: Path) -> list[str]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    colors = {"al": "C0", "max-first": "C1", "random": "C2"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, unit, scale in (
        (axes[0], "force_rmse", "meV/Å", 1e3),
        (axes[1], "energy_rmse", "meV/atom", 1e3),
    ):
        for arm, c in report["curves"].items():
            m = c[key]
            x = np.asarray(m["n_labels"])
            label = arm if arm != "al" else f"AL ({report['al_strategy']})"
            ax.plot(x, np.asarray(m["mean"]) * scale, "o-", color=colors.get(arm), label=label)
            ax.fill_between(
                x,
                np.asarray(m["min"]) * scale,
                np.asarray(m["max"]) * scale,
                color=colors.get(arm),
                alpha=0.2,
            )
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("labels (oracle calls, initial set included)")
        ax.set_ylabel(f"test {key.replace('_', ' ')} ({unit})")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.suptitle(
        f"{report['name']}: test error vs labels "
        f"(mean over {len(report['seeds'])} seeds, band = min-max)"
    )
    fig.tight_layout()
    p = out / "learning_curves.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(p.name)

    u = report["uncertainty"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    regimes = u["test_regime"]
    for reg in sorted(set(regimes)):
        sel = [i for i, r in enumerate(regimes) if r == reg]
        ax.scatter(
            np.asarray(u["test_max_dev"])[sel], np.asarray(u["test_max_err"])[sel], s=14, label=reg
        )
    lim = [
        min(min(u["test_max_dev"]), min(u["test_max_err"])),
        max(max(u["test_max_dev"]), max(u["test_max_err"])),
    ]
    ax.plot(lim, lim, "k--", lw=0.8, label="error = deviation")
    ax.plot(
        lim,
        [v * u["calibration"]["scale"] for v in lim],
        "r:",
        lw=1,
        label=f"calibrated (x{u['calibration']['scale']:.2f})",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("committee max force deviation (eV/Å)")
    ax.set_ylabel("true max force error (eV/Å)")
    ax.set_title(f"final AL committee, test set: Spearman {u['spearman_test']:.2f}")
    ax.legend(fontsize=7)
    ax = axes[1]
    cc = u["calibration_curve_test"]
    ax.plot([r["mean_dev"] for r in cc], [r["mean_err"] for r in cc], "o-", label="observed (mean)")
    ax.plot(
        [r["mean_dev"] for r in cc], [r["median_err"] for r in cc], "s--", label="observed (median)"
    )
    ax.plot(
        [r["mean_dev"] for r in cc],
        [r["calibrated"] for r in cc],
        "r:",
        label="calibrated prediction",
    )
    ax.plot(
        [r["mean_dev"] for r in cc],
        [r["mean_dev"] for r in cc],
        "k--",
        lw=0.8,
        label="raw deviation",
    )
    ax.set_xlabel("predicted max force deviation, bin mean (eV/Å)")
    ax.set_ylabel("observed max force error (eV/Å)")
    ax.set_title("calibration (scale fitted on the validation set)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out / "uncertainty.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(p.name)
    return files


# --------------------------------------------------------------------------- driver
def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def run_benchmark(
    bench: BenchConfig, campaign: CampaignConfig, out_dir: str | Path, *, log: Any = None
) -> dict[str, Any]:
    """Run every arm x seed, analyse, write ``report.json`` and PNGs to ``out_dir``.

    Returns the report (also written as JSON; NaN/inf stored as null).
    """
    from mlip_core.uncertainty import spearman

    from .steps import bootstrap_structures

    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    import torch

    torch.set_num_threads(1)  # small tensors, shared machine: one thread is fastest
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "name": bench.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": bench.model_dump(mode="json"),
        "campaign": campaign.model_dump(mode="json"),
        "seeds": bench.seeds,
        "arms": bench.arms,
        "al_strategy": campaign.selection.strategy,
        "machine": {
            "start": _load(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    t0 = time.perf_counter()
    test = build_test_set(bench, campaign, seed=1000, n_frames=bench.test_set.frames)
    val = build_test_set(bench, campaign, seed=2000, n_frames=bench.test_set.validation_frames)
    regimes = sorted({a.info["regime"] for a in test})
    report["test_set"] = {
        "n_test": len(test),
        "n_validation": len(val),
        "regimes": regimes,
        "atoms_per_regime": {
            r: len(next(a for a in test if a.info["regime"] == r)) for r in regimes
        },
        "build_s": time.perf_counter() - t0,
    }
    say(f"test set: {len(test)} frames, validation {len(val)} ({', '.join(regimes)})")
    starts = _starts(bench, campaign)
    labeler = _labeler(campaign)
    jobs = []
    for seed in bench.seeds:
        rng = np.random.default_rng(_seed(seed, "bootstrap"))
        boot = bootstrap_structures(
            starts,
            campaign.bootstrap.n_structures,
            [campaign.bootstrap.rattle],
            campaign.bootstrap.strain,
            rng,
        )
        boot = _label(labeler, boot)
        t0 = time.perf_counter()
        species = sorted({int(z) for a in starts for z in a.numbers})
        initial = _train(campaign, boot, None, seed, 0, species)
        t_init = time.perf_counter() - t0
        say(f"seed {seed}: initial committee on {len(boot)} labels ({t_init:.0f} s)")
        for arm in bench.arms:
            jobs.append(
                {
                    "bench": bench.model_dump(mode="json"),
                    "campaign": campaign.model_dump(mode="json"),
                    "arm": arm,
                    "seed": seed,
                    "test": test,
                    "validation": val,
                    "bootstrap": boot,
                    "initial_model": initial,
                    "initial_train_s": t_init,
                    "out_dir": str(out),
                }
            )
    report["exploration_starts"] = [
        {"formula": a.get_chemical_formula(), "n_atoms": len(a), "pbc": [bool(p) for p in a.pbc]}
        for a in starts
    ]
    say(f"{len(jobs)} runs (arms {bench.arms} x seeds {bench.seeds}) on {bench.workers} worker(s)")
    if bench.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(bench.workers, mp_context=get_context("spawn")) as pool:
            results = []
            for res in pool.map(run_arm, jobs):
                say(
                    f"  {res['arm']} seed {res['seed']}: {res['wall_s']:.0f} s, final force RMSE "
                    f"{res['curve'][-1]['force_rmse'] * 1e3:.1f} meV/Å"
                )
                results.append(res)
    else:
        results = []
        for job in jobs:
            res = run_arm(job)
            say(
                f"  {res['arm']} seed {res['seed']}: {res['wall_s']:.0f} s, final force RMSE "
                f"{res['curve'][-1]['force_rmse'] * 1e3:.1f} meV/Å"
            )
            results.append(res)
    report["runs"] = [
        {
            k: v
            for k, v in r.items()
            if k
            not in ("test_max_dev", "test_max_err", "test_regime", "val_max_dev", "val_max_err")
        }
        for r in results
    ]
    by_arm = {arm: [r for r in results if r["arm"] == arm] for arm in bench.arms}
    report["curves"] = _curves(report["runs"], bench.arms)
    report["final_per_regime_force_rmse"] = {
        arm: {
            reg: float(np.mean([r["curve"][-1]["per_regime"][reg]["force_rmse"] for r in runs]))
            for reg in runs[0]["curve"][-1]["per_regime"]
        }
        for arm, runs in by_arm.items()
    }
    report.update(_headlines(report["curves"]))
    # Uncertainty quality: the final AL committees (pooled over seeds for the plots).
    ref_arm = "al" if "al" in by_arm else bench.arms[0]
    fin = by_arm[ref_arm]
    devs = [d for r in fin for d in r["test_max_dev"]]
    errs = [e for r in fin for e in r["test_max_err"]]
    regs = [g for r in fin for g in r["test_regime"]]
    from mlip_core.uncertainty import fit_calibration

    rhos = [spearman(r["test_max_dev"], r["test_max_err"]) for r in fin]
    cal = fit_calibration(
        [d for r in fin for d in r["val_max_dev"]],
        [e for r in fin for e in r["val_max_err"]],
        "scale",
    )
    pred = np.asarray(devs) * float(cal.scale)  # type: ignore[arg-type]
    report["uncertainty"] = {
        "arm": ref_arm,
        "spearman_test": float(np.mean(rhos)),
        "spearman_test_per_seed": rhos,
        "spearman_per_arm": {
            arm: float(np.mean([spearman(r["test_max_dev"], r["test_max_err"]) for r in runs]))
            for arm, runs in by_arm.items()
        },
        "median_err_over_dev_test": float(np.median(np.asarray(errs) / np.asarray(devs))),
        "calibration": cal.to_dict(),
        "fraction_test_err_below_calibrated": float(np.mean(np.asarray(errs) <= pred)),
        "calibration_curve_test": calibration_curve(
            devs, errs, bench.calibration_bins, float(cal.scale)
        ),  # type: ignore[arg-type]
        "test_max_dev": devs,
        "test_max_err": errs,
        "test_regime": regs,
    }
    if bench.properties:
        from ase.calculators.emt import EMT

        from .properties import LabelerCalculator, compare_properties, property_checks

        m = bench.material
        oracle_calc = EMT() if campaign.labeler.name == "emt" else LabelerCalculator(labeler)
        oracle = property_checks(oracle_calc, m.element, m.crystal, m.lattice_constant)
        props: dict[str, Any] = {
            "oracle": oracle,
            "vacancy": "relaxed positions at fixed cell "
            "(the potential's own lattice constant); unrelaxed also given",
        }
        for arm, runs in by_arm.items():
            per_seed = [compare_properties(r["properties"], oracle) for r in runs]
            summary = {}
            for k in per_seed[0]:
                diffs = [p[k]["diff_percent"] for p in per_seed]
                summary[k] = {
                    "oracle": per_seed[0][k]["oracle"],
                    "model_mean": float(np.mean([p[k]["model"] for p in per_seed])),
                    "diff_percent_per_seed": diffs,
                    "diff_percent_mean_abs": float(np.mean(np.abs(diffs))),
                }
            props[f"{arm}_vs_oracle"] = summary
        report["properties"] = props
    report["machine"]["end"] = _load()
    report["wall_s"] = time.perf_counter() - t_start
    if "headline" in report:
        report["targets"] = _targets(report)
    report["plots"] = _plots(report, out)
    (out / "report.json").write_text(json.dumps(_finite(report), indent=1))
    say(f"report: {out / 'report.json'} ({report['wall_s']:.0f} s)")
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines of the headline numbers."""
    lines = [
        f"{report['name']}: {len(report['seeds'])} seed(s), arms {report['arms']}, "
        f"wall {report['wall_s']:.0f} s"
    ]
    for arm, c in report["curves"].items():
        f = c["force_rmse"]
        lines.append(
            f"  {arm:10s} labels {f['n_labels'][0]:.0f}->{f['n_labels'][-1]:.0f}: "
            f"force RMSE {f['mean'][0] * 1e3:.1f} -> {f['mean'][-1] * 1e3:.1f} meV/Å, "
            f"energy RMSE {c['energy_rmse']['mean'][-1] * 1e3:.2f} meV/atom"
        )
    h = report.get("headline", {}).get("force")
    if h:
        reach = (
            f"{h['labels_to_reach']:.1f} labels = {h['labels_ratio']:.2f} of random's "
            f"{h['baseline_final_labels']:.0f}"
            if h["reached"]
            else f"not reached (AL final {h['gap_percent']:+.1f} % vs random final)"
        )
        lines.append(
            f"  AL to reach random's final force RMSE: {reach}; error ratio at "
            f"{h['common_labels']:.0f} labels: {h['error_ratio_at_equal_labels']:.2f}"
        )
        lines.append(
            "  AL labels / random labels for random's error at each budget: "
            + ", ".join(
                f"{b['baseline_labels']:.0f}: "
                + ("n/r" if b["labels_ratio"] is None else f"{b['labels_ratio']:.2f}")
                for b in h.get("by_baseline_budget", [])
            )
        )
    u = report["uncertainty"]
    lines.append(
        f"  Spearman (max dev vs max error, test): {u['spearman_test']:.2f}; calibration "
        f"scale {u['calibration']['scale']:.2f}"
    )
    p = report.get("properties", {}).get("al_vs_oracle")
    if p:
        lines.append(
            "  AL vs oracle: "
            + ", ".join(
                f"{k} {v['model_mean']:.4g} vs {v['oracle']:.4g} ({v['diff_percent_mean_abs']:.1f} %)"
                for k, v in p.items()
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``pesflow bench al-efficiency CONFIG [--out DIR]``: run and print the headline.

    Exit codes: 0 done (targets met or not: the report says), 2 bad config.
    """
    ap = argparse.ArgumentParser(
        prog="pesflow bench al-efficiency",
        description="Active learning vs random / max-first selection.",
    )
    ap.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="benchmark YAML")
    ap.add_argument("--out", default=None, help="report folder (default: <report_dir>/<stamp>)")
    ap.add_argument(
        "--reanalyse",
        metavar="REPORT_DIR",
        default=None,
        help="recompute curves, headline and plots of an existing report",
    )
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.reanalyse:
        print("\n".join(summary_lines(reanalyse(args.reanalyse))))
        return 0
    try:
        bench, campaign = load_bench_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path(bench.report_dir) / f"{bench.name}-{stamp}"
    report = run_benchmark(bench, campaign, out, log=lambda m: print(m, flush=True))
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
