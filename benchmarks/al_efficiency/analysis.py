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
    "calls_to_reach",
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
    """Pass/fail of issue 16's targets, each with its measured value (``None``: not
    measurable in this report, e.g. an arm that was not run):

    - every test regime's force RMSE <= ``target_force_rmse`` with <= 300 training labels
      (headline arm, every seed);
    - oracle calls >= 100x fewer than the ``oracle-md`` arm at that per-regime error;
    - labels <= 0.5 of the baseline's (``random-all`` in the default config) for the
      baseline's final error;
    - the 90 % calibrated bound covers 85-95 % of the test frames in every regime;
    - C11 / C12 / C44 within 10 % of the oracle's (when properties were checked);
    - Spearman >= 0.6 between max deviation and max error on the test set.
    """
    t: dict[str, Any] = {}
    arm = report["arms"][0]
    reach = report.get("calls_to_reach", {}).get("arms", {})
    mine, oracle = reach.get(arm), reach.get("oracle-md")
    if mine is not None:
        labels = [x for x in mine["labels_per_seed"] if x is not None]
        ok = len(labels) == mine["seeds"] and max(labels, default=math.inf) <= 300
        t["per_regime_force_rmse_le_target_within_300_labels"] = {
            "target": 300,
            "measured": max(labels) if len(labels) == mine["seeds"] else None,
            "met": ok,
            "note": f"{mine['reached']}/{mine['seeds']} seeds reached "
            f"{report['calls_to_reach']['target_force_rmse'] * 1e3:.0f} meV/Å in every regime; "
            f"worst regime at the end {mine['final_worst_regime_force_rmse'] * 1e3:.0f} meV/Å",
        }
    if mine is not None and oracle is not None:
        ratio = (
            oracle["calls_mean"] / mine["calls_mean"]
            if oracle["calls_mean"] and mine["calls_mean"]
            else None
        )
        t["oracle_calls_ratio_vs_oracle_md_ge_100"] = {
            "target": 100,
            "measured": ratio,
            "met": ratio is not None and ratio >= 100,
            "note": "both must reach the per-regime target; oracle-md "
            + ("did not" if oracle["calls_mean"] is None else f"{oracle['calls_mean']:.0f} calls"),
        }
    h = report.get("headline", {}).get("force")
    if h is not None:
        ratio = h["labels_ratio"]
        t["labels_ratio_le_0.5"] = {
            "target": 0.5,
            "measured": ratio,
            "met": ratio is not None and ratio <= 0.5,
            "note": f"{h['arm']} vs {h['baseline']}: "
            + (
                f"not reached ({h['arm']} final {h['gap_percent']:+.1f} %)"
                if ratio is None
                else f"{ratio:.2f} of {h['baseline']}'s labels"
            ),
        }
    cov = report.get("uncertainty", {}).get("coverage_test")
    if cov:
        per = {k: v["covered"] for k, v in cov.items() if k != "all"}
        t["coverage_90_in_85_95_every_regime"] = {
            "target": [0.85, 0.95],
            "measured": per,
            "met": all(0.85 <= v <= 0.95 for v in per.values()),
        }
    rho = report.get("uncertainty", {}).get("spearman_test")
    t["spearman_ge_0.6"] = {"target": 0.6, "measured": rho, "met": rho is not None and rho >= 0.6}
    props = report.get("properties", {}).get(f"{arm}_vs_oracle")
    if props:
        elastic = {
            k: props[k]["diff_percent_mean_abs"]
            for k in ("C11_GPa", "C12_GPa", "C44_GPa")
            if k in props
        }
        t["elastic_within_10pct"] = {
            "target": 10.0,
            "measured": elastic,
            "met": bool(elastic) and all(v <= 10.0 for v in elastic.values()),
        }
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


def _reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """First x where the log-linear interpolation of ys through the points reaches target."""
    t = math.log(target)
    ly = [math.log(max(y, 1e-300)) for y in ys]
    if ly[0] <= t:
        return float(xs[0])
    for i in range(1, len(xs)):
        if ly[i] <= t:
            return float(xs[i - 1] + (t - ly[i - 1]) * (xs[i] - xs[i - 1]) / (ly[i] - ly[i - 1]))
    return None


def calls_to_reach(runs: list[dict[str, Any]], arms: list[str], target: float) -> dict[str, Any]:
    """Oracle calls (and labels, and campaign seconds where the curve has ``elapsed_s``) each
    arm needs until **every** test regime's force RMSE is at most ``target`` (eV/Å), per seed
    and as mean / min / max over the seeds that reached it, the calls at which each regime
    alone reached it (seed mean; ``None``: not reached) and the runs' mean ``wall_s``.

    A run's ``curve`` points need ``oracle_calls`` and ``per_regime`` force RMSEs; the error
    is interpolated log-linearly between committees."""
    out: dict[str, Any] = {"target_force_rmse": target, "arms": {}}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm and all("oracle_calls" in p for p in r["curve"])]
        if not mine:
            continue
        per_seed, labels, seconds, regimes = [], [], [], {}
        for r in mine:
            pts = r["curve"]
            xs = [float(p["oracle_calls"]) for p in pts]
            worst = [max(v["force_rmse"] for v in p["per_regime"].values()) for p in pts]
            per_seed.append(_reach(xs, worst, target))
            labels.append(_reach([float(p["n_labels"]) for p in pts], worst, target))
            if all(p.get("elapsed_s") is not None for p in pts):
                seconds.append(_reach([float(p["elapsed_s"]) for p in pts], worst, target))
            for reg in pts[-1]["per_regime"]:
                ys = [p["per_regime"][reg]["force_rmse"] for p in pts]
                regimes.setdefault(reg, []).append(_reach(xs, ys, target))
        got = [c for c in per_seed if c is not None]
        out["arms"][arm] = {
            "calls_per_seed": per_seed,
            "labels_per_seed": labels,
            "reached": len(got),
            "seeds": len(per_seed),
            "calls_mean": float(np.mean(got)) if got else None,
            "calls_min": float(min(got)) if got else None,
            "calls_max": float(max(got)) if got else None,
            "seconds_per_seed": seconds,  # campaign wall time (elapsed_s) to the target
            "seconds_mean": (
                float(np.mean([t for t in seconds if t is not None]))
                if any(t is not None for t in seconds)
                else None
            ),
            "wall_s_mean": (
                float(np.mean([r["wall_s"] for r in mine]))
                if all("wall_s" in r for r in mine)
                else None
            ),
            "final_worst_regime_force_rmse": float(
                np.mean(
                    [
                        max(v["force_rmse"] for v in r["curve"][-1]["per_regime"].values())
                        for r in mine
                    ]
                )
            ),
            "per_regime_calls_mean": {
                reg: (float(np.mean(v)) if all(c is not None for c in v) else None)
                for reg, v in sorted(regimes.items())
            },
        }
    return out
