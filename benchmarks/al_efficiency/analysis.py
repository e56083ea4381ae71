"""Analysis of the per-run learning curves: means over seeds, labels to reach a target, the
headline (labels an arm needs to reach the baseline's final error), calibration curves and
the pass/fail targets. Pure functions of the report's numbers (no training, no labelling), so
:func:`benchmarks.al_efficiency.run.reanalyse` can redo them on a written report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "arm_curves",
    "calibration_curve",
    "headline",
    "headlines",
    "labels_to_reach",
    "mean_curve",
    "targets",
]


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
    arm: str = "fps",
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


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail of the benchmark's targets: the headline arm needs <= 0.30 of the baseline's
    labels for the baseline's final force error; Spearman >= 0.6 between max deviation and max
    error on the test set; the headline arm's lattice constant within 0.5 % and bulk modulus
    within 5 % of the oracle's (when properties were checked)."""
    h = report["headline"]["force"]
    arm, base = h["arm"], h["baseline"]
    t: dict[str, Any] = {}
    ratio = h["labels_ratio"]
    t["labels_ratio_le_0.30"] = {
        "target": 0.30,
        "measured": ratio,
        "met": ratio is not None and ratio <= 0.30,
        "note": f"not reached: {arm} final error is {h['gap_percent']:+.1f} % vs {base}'s final"
        if ratio is None
        else f"{arm} needs {ratio:.2f} of {base}'s labels",
    }
    rho = report["uncertainty"]["spearman_test"]
    t["spearman_ge_0.6"] = {"target": 0.6, "measured": rho, "met": rho is not None and rho >= 0.6}
    props = report.get("properties", {}).get(f"{arm}_vs_oracle")
    if props:
        da = props["lattice_constant"]["diff_percent_mean_abs"]
        db = props["bulk_modulus_GPa"]["diff_percent_mean_abs"]
        t["lattice_constant_within_0.5pct"] = {"target": 0.5, "measured": da, "met": da <= 0.5}
        t["bulk_modulus_within_5pct"] = {"target": 5.0, "measured": db, "met": db <= 5.0}
    return t


def arm_curves(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per arm, :func:`mean_curve` over its seeds of ``force_rmse`` and ``energy_rmse``."""
    return {
        arm: {
            key: mean_curve([r for r in runs if r["arm"] == arm], key)
            for key in ("force_rmse", "energy_rmse")
        }
        for arm in arms
    }


def headlines(curves: dict[str, Any], arms: list[str], baseline: str) -> dict[str, Any]:
    """``{"headline": {...}}``: the first arm vs ``baseline`` (force and energy), and every
    other arm vs ``baseline`` (force, key ``force_<arm>_vs_<baseline>``); ``{}`` when the
    first arm is the baseline."""
    arm = arms[0]
    if arm == baseline or baseline not in curves:
        return {}
    out = {
        "force": headline(curves, arm=arm, baseline=baseline, key="force_rmse"),
        "energy": headline(curves, arm=arm, baseline=baseline, key="energy_rmse"),
    }
    for other in arms[1:]:
        if other != baseline:
            out[f"force_{other}_vs_{baseline}"] = headline(
                curves, arm=other, baseline=baseline, key="force_rmse"
            )
    return {"headline": out}
