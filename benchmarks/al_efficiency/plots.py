"""The report's PNG plots (matplotlib, the ``bench`` extra: imported here only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plots"]

COLORS = {"fps": "C0", "max-first": "C1", "random": "C2"}


def plots(report: dict[str, Any], out: Path) -> list[str]:
    """Write ``learning_curves.png`` (test force and energy RMSE vs training labels per arm,
    mean over seeds with the min-max band) and ``uncertainty.png`` (max deviation vs max error
    of the headline arm's final committees on the test set, and the calibration curve) into
    ``out``; returns the file names."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, unit, scale in (
        (axes[0], "force_rmse", "meV/Å", 1e3),
        (axes[1], "energy_rmse", "meV/atom", 1e3),
    ):
        for arm, c in report["curves"].items():
            m = c[key]
            x = np.asarray(m["n_labels"])
            ax.plot(x, np.asarray(m["mean"]) * scale, "o-", color=COLORS.get(arm), label=arm)
            ax.fill_between(
                x,
                np.asarray(m["min"]) * scale,
                np.asarray(m["max"]) * scale,
                color=COLORS.get(arm),
                alpha=0.2,
            )
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training labels (bootstrap set included)")
        ax.set_ylabel(f"test {key.replace('_', ' ')} ({unit})")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.suptitle(
        f"{report['name']}: test error vs labels "
        + (
            f"(mean over {len(report['seeds'])} seeds, band = min-max)"
            if len(report["seeds"]) > 1
            else f"(seed {report['seeds'][0]})"
        )
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
    ax.set_title(f"final {u['arm']} committees, test set: Spearman {u['spearman_test']:.2f}")
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
