"""The driver: test sets, every arm x seed (in a process pool), analysis, ``report.json`` and
plots (:func:`run_benchmark`); :func:`reanalyse` redoes the analysis of a written report;
:func:`summary_lines` prints its headline."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from workflows.config import CampaignConfig

from .analysis import arm_curves, calibration_curve, calls_to_reach, headlines, targets
from .arm import run_arm
from .config import ORACLE_MD, BenchConfig, arm_config, exploration_starts
from .oracle_md import run_oracle_md_arm
from .plots import plots
from .testset import build_test_set, oracle_calculator

__all__ = ["reanalyse", "run_benchmark", "summary_lines"]


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


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One arm x seed: a campaign through the product's loop, or the oracle-MD arm."""
    return run_oracle_md_arm(job) if job["arm"] == ORACLE_MD else run_arm(job)


def _analyse(report: dict[str, Any], out: Path) -> None:
    """Curves, headline, targets and plots from ``report['runs']`` (in place)."""
    arms = report["arms"]
    report["curves"] = arm_curves(report["runs"], arms)
    target = report["benchmark"].get("target_force_rmse", 0.05)
    report["calls_to_reach"] = calls_to_reach(report["runs"], arms, target)
    report.pop("headline", None)
    report.update(headlines(report["curves"], arms, report["baseline"]))
    if "headline" in report:
        report["targets"] = targets(report)
    report["plots"] = plots(report, out)


def _uncertainty(results: list[dict[str, Any]], arm: str, n_bins: int) -> dict[str, Any]:
    """Uncertainty quality of ``arm``'s final committees (pooled over seeds for the plots):
    Spearman of max deviation vs max error, a scale calibration fitted on the validation set,
    and a 90 % conformal bound per regime fitted on the validation set whose coverage is
    measured on the test set (``coverage_test``)."""
    from mlip_core.calibration import (
        CalibrationError,
        coverage_report,
        fit_calibration,
        fit_regime_calibration,
    )
    from mlip_core.uncertainty import spearman

    fin = [r for r in results if r["arm"] == arm]
    devs = [d for r in fin for d in r["test_max_dev"]]
    errs = [e for r in fin for e in r["test_max_err"]]
    rhos = [spearman(r["test_max_dev"], r["test_max_err"]) for r in fin]
    cal = fit_calibration(
        [d for r in fin for d in r["val_max_dev"]],
        [e for r in fin for e in r["val_max_err"]],
        "scale",
    )
    scale = float(cal.scale)  # type: ignore[arg-type]
    try:
        regime_cal = fit_regime_calibration(
            [d for r in fin for d in r["val_max_dev"]],
            [e for r in fin for e in r["val_max_err"]],
            [g for r in fin for g in r["val_regime"]],
            coverage=0.9,
            min_points=9,
        )
    except CalibrationError as exc:  # a reduced run: too few validation frames
        regime_cal, coverage = None, None
        note = str(exc)
    else:
        tested = [g for r in fin for g in r["test_regime"]]
        coverage = coverage_report(regime_cal, devs, errs, tested)
        note = ""
    return {
        "arm": arm,
        "spearman_test": float(np.mean(rhos)),
        "spearman_test_per_seed": rhos,
        "spearman_per_arm": {
            a: float(
                np.mean(
                    [
                        spearman(r["test_max_dev"], r["test_max_err"])
                        for r in results
                        if r["arm"] == a
                    ]
                )
            )
            for a in dict.fromkeys(r["arm"] for r in results if "test_max_dev" in r)
        },
        "median_err_over_dev_test": float(np.median(np.asarray(errs) / np.asarray(devs))),
        "calibration": cal.to_dict(),
        "regime_calibration": None if regime_cal is None else regime_cal.to_dict(),
        "coverage_test": coverage,
        "coverage_note": note,
        "fraction_test_err_below_calibrated": float(
            np.mean(np.asarray(errs) <= np.asarray(devs) * scale)
        ),
        "calibration_curve_test": calibration_curve(devs, errs, n_bins, scale),
        "test_max_dev": devs,
        "test_max_err": errs,
        "test_regime": [g for r in fin for g in r["test_regime"]],
    }


def _properties(
    bench: BenchConfig, campaign: CampaignConfig, by_arm: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The oracle's properties and, per arm, its final committees' differences (percent)."""
    from benchmarks.al_efficiency.properties import compare_properties, property_checks
    from workflows.steps import make_labeler

    m = bench.material
    oracle_calc = oracle_calculator(campaign, make_labeler(campaign))
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
    return props


def run_benchmark(
    bench: BenchConfig,
    campaign: CampaignConfig,
    out_dir: str | Path,
    *,
    log: Any = None,
    test_sets: tuple[list[Any], list[Any]] | None = None,
) -> dict[str, Any]:
    """Run every arm x seed (each a campaign through the product's loop), analyse, write
    ``report.json`` and PNGs to ``out_dir``; ``log(str)`` receives progress lines.

    ``campaign`` is the shared campaign of :func:`~.config.load_bench_config`; ``test_sets``
    the (test, validation) sets of :func:`~.testset.build_test_set` when already built (else
    built here, seeds 1000 and 2000). Returns the report (also written as JSON; NaN/inf
    stored as null).
    """
    import torch

    def say(msg: str) -> None:
        if log is not None:
            log(msg)

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
        "baseline": bench.baseline,
        "machine": {
            "start": _load(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    t0 = time.perf_counter()
    if test_sets is None:
        test = build_test_set(bench, campaign, seed=1000, n_frames=bench.test_set.frames)
        val = build_test_set(bench, campaign, seed=2000, n_frames=bench.test_set.validation_frames)
    else:
        test, val = test_sets
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
    report["exploration_starts"] = [
        {"formula": a.get_chemical_formula(), "n_atoms": len(a), "pbc": [bool(p) for p in a.pbc]}
        for a in exploration_starts(campaign)
    ]
    jobs = [
        {
            "bench": bench.model_dump(mode="json"),
            "campaign": arm_config(campaign, arm, seed).model_dump(mode="json"),
            "arm": arm,
            "seed": seed,
            "test": test,
            "validation": val,
            "out_dir": str(out),
        }
        for seed in bench.seeds
        for arm in bench.arms
    ]
    say(
        f"{len(jobs)} campaigns (arms {bench.arms} x seeds {bench.seeds}), {bench.workers} worker(s)"
    )
    results = []

    def done(res: dict[str, Any]) -> None:
        say(
            f"  {res['arm']} seed {res['seed']}: {res['wall_s']:.0f} s, {res['oracle_calls']} "
            f"oracle calls, final force RMSE {res['curve'][-1]['force_rmse'] * 1e3:.1f} meV/Å"
        )
        results.append(res)

    if bench.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(bench.workers, mp_context=get_context("spawn")) as pool:
            for res in pool.map(_run_job, jobs):
                done(res)
    else:
        for job in jobs:
            done(_run_job(job))
    report["runs"] = [
        {
            k: v
            for k, v in r.items()
            if k
            not in (
                "test_max_dev",
                "test_max_err",
                "test_regime",
                "val_max_dev",
                "val_max_err",
                "val_regime",
            )
        }
        for r in results
    ]
    by_arm = {arm: [r for r in results if r["arm"] == arm] for arm in bench.arms}
    report["final_per_regime_force_rmse"] = {
        arm: {
            reg: float(np.mean([r["curve"][-1]["per_regime"][reg]["force_rmse"] for r in runs]))
            for reg in runs[0]["curve"][-1]["per_regime"]
        }
        for arm, runs in by_arm.items()
    }
    report["oracle_calls"] = {
        arm: {
            "mean": float(np.mean([r["oracle_calls"] for r in runs])),
            "unused_mean": float(np.mean([r["oracle_calls_unused"] for r in runs])),
            "md_steps_mean": float(np.mean([r["md_steps"] for r in runs])),
        }
        for arm, runs in by_arm.items()
    }
    report["uncertainty"] = _uncertainty(results, bench.arms[0], bench.calibration_bins)
    if bench.properties:
        report["properties"] = _properties(bench, campaign, by_arm)
    report["machine"]["end"] = _load()
    report["wall_s"] = time.perf_counter() - t_start
    _analyse(report, out)
    (out / "report.json").write_text(json.dumps(_finite(report), indent=1))
    say(f"report: {out / 'report.json'} ({report['wall_s']:.0f} s)")
    return report


def reanalyse(report_dir: str | Path) -> dict[str, Any]:
    """Recompute the curves, headline, targets and plots of a written report from its own
    per-run numbers (no training or labelling): for analysis changes after a long run."""
    out = Path(report_dir)
    report = json.loads((out / "report.json").read_text())
    _analyse(report, out)
    report["reanalysed"] = datetime.now(UTC).isoformat(timespec="seconds")
    (out / "report.json").write_text(json.dumps(_finite(report), indent=1))
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines of the headline numbers (meV/Å, meV/atom, labels)."""
    lines = [
        f"{report['name']}: {len(report['seeds'])} seed(s), arms {report['arms']}, "
        f"wall {report['wall_s']:.0f} s"
    ]
    for arm, c in report["curves"].items():
        f = c["force_rmse"]
        calls = report.get("oracle_calls", {}).get(arm, {})
        lines.append(
            f"  {arm:10s} labels {f['n_labels'][0]:.0f}->{f['n_labels'][-1]:.0f}: "
            f"force RMSE {f['mean'][0] * 1e3:.1f} -> {f['mean'][-1] * 1e3:.1f} meV/Å, "
            f"energy RMSE {c['energy_rmse']['mean'][-1] * 1e3:.2f} meV/atom"
            + (
                f"; {calls['mean']:.0f} oracle calls vs {calls['md_steps_mean']:.0f} MD steps"
                if calls
                else ""
            )
        )
    h = report.get("headline", {}).get("force")
    if h:
        arm, base = h["arm"], h["baseline"]
        reach = (
            f"{h['labels_to_reach']:.1f} labels = {h['labels_ratio']:.2f} of {base}'s "
            f"{h['baseline_final_labels']:.0f}"
            if h["reached"]
            else f"not reached ({arm} final {h['gap_percent']:+.1f} % vs {base} final)"
        )
        lines.append(
            f"  {arm} to reach {base}'s final force RMSE: {reach}; error ratio at "
            f"{h['common_labels']:.0f} labels: {h['error_ratio_at_equal_labels']:.2f}"
        )
        lines.append(
            f"  {arm} labels / {base} labels for {base}'s error at each budget: "
            + ", ".join(
                f"{b['baseline_labels']:.0f}: "
                + ("n/r" if b["labels_ratio"] is None else f"{b['labels_ratio']:.2f}")
                for b in h.get("by_baseline_budget", [])
            )
        )
    reach = report.get("calls_to_reach", {})
    for arm, r in reach.get("arms", {}).items():
        lines.append(
            f"  {arm:10s} oracle calls until every regime <= "
            f"{reach['target_force_rmse'] * 1e3:.0f} meV/Å: "
            + (
                f"{r['calls_mean']:.0f} ({r['calls_min']:.0f}-{r['calls_max']:.0f}; "
                f"{r['reached']}/{r['seeds']} seeds"
                + (f", {r['seconds_mean']:.0f} s" if r.get("seconds_mean") is not None else "")
                + ")"
                if r["calls_mean"] is not None
                else f"not reached (worst regime at the end "
                f"{r['final_worst_regime_force_rmse'] * 1e3:.0f} meV/Å)"
            )
            + (f"; wall {r['wall_s_mean']:.0f} s" if r.get("wall_s_mean") is not None else "")
        )
    u = report["uncertainty"]
    lines.append(
        f"  Spearman (max dev vs max error, test, {u['arm']}): {u['spearman_test']:.2f}; "
        f"calibration scale {u['calibration']['scale']:.2f}; per arm: "
        + ", ".join(f"{a} {v:.2f}" for a, v in u.get("spearman_per_arm", {}).items())
    )
    p = report.get("properties", {}).get(f"{report['arms'][0]}_vs_oracle")
    if p:
        lines.append(
            f"  {report['arms'][0]} vs oracle: "
            + ", ".join(
                f"{k} {v['model_mean']:.4g} vs {v['oracle']:.4g} ({v['diff_percent_mean_abs']:.1f} %)"
                for k, v in p.items()
            )
        )
    return lines
