"""The AL-efficiency benchmark: analysis maths, property checks, and a reduced end-to-end run.

The reduced run (1 seed, 2 iterations, tiny trainings and test set) checks the report's
structure and that every number in it is finite; the full benchmark is ``make bench-science``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.calculators.emt import EMT

from workflows.al_benchmark import (
    build_test_set,
    headline,
    labels_to_reach,
    load_bench_config,
    mean_curve,
    reanalyse,
    run_benchmark,
    summary_lines,
)
from workflows.config import ConfigError
from workflows.properties import (
    LabelerCalculator,
    compare_properties,
    cubic_elastic_constants,
    equation_of_state,
    property_checks,
    vacancy_formation_energy,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "bench_cu_emt.yaml"

REDUCED: dict[str, Any] = {
    "seeds": [0],
    "iterations": 2,
    "workers": 1,
    "campaign_overrides": {
        "training": {"max_epochs": 15, "warm_start_epochs": 5, "max_time_s": None},
        "exploration": {
            "walkers": [
                {"temperature": 600, "steps": 30, "record_every": 5},
                {"temperature": 1200, "steps": 30, "record_every": 5},
                {"temperature": 900, "steps": 30, "record_every": 5},
            ]
        },
    },
    "test_set": {
        "frames": 2,
        "validation_frames": 2,
        "equilibration": 10,
        "stride": 5,
        "temperatures": [300, 1500],
        "strains": [0.02],
    },
}


# --------------------------------------------------------------------------- analysis maths
def _curve(xs: list[float], ys: list[float]) -> dict[str, list[float]]:
    return {"n_labels": xs, "mean": ys, "min": ys, "max": ys, "std": [0.0] * len(xs)}


def test_labels_to_reach_interpolates_log_linearly() -> None:
    c = _curve([10, 20, 30], [1.0, 0.1, 0.01])
    assert labels_to_reach(c, 1.0) == 10
    assert labels_to_reach(c, math.sqrt(0.1)) == pytest.approx(15.0)  # halfway in log
    assert labels_to_reach(c, 0.005) is None


def test_headline_ratio_and_gap() -> None:
    curves = {
        "al": {"force_rmse": _curve([8, 16, 24, 32], [0.4, 0.1, 0.05, 0.04])},
        "random": {"force_rmse": _curve([8, 16, 24, 32], [0.4, 0.2, 0.15, 0.1])},
    }
    h = headline(curves)
    assert h["reached"] and h["labels_to_reach"] == pytest.approx(16.0)
    assert h["labels_ratio"] == pytest.approx(0.5)
    budgets = {b["baseline_labels"]: b["labels_ratio"] for b in h["by_baseline_budget"]}
    assert budgets[16] == pytest.approx(12 / 16)  # AL reaches 0.2 halfway (log) from 8 to 16
    assert budgets[32] == pytest.approx(0.5)
    assert h["error_ratio_at_equal_labels"] == pytest.approx(0.4)
    worse = {"al": curves["random"], "random": curves["al"]}
    h2 = headline(worse)
    assert not h2["reached"] and h2["labels_ratio"] is None
    assert h2["gap_percent"] == pytest.approx(150.0)  # 0.1 vs 0.04


def test_mean_curve_over_seeds_with_different_label_counts() -> None:
    runs = [
        {"curve": [{"n_labels": 8, "e": 0.4}, {"n_labels": 16, "e": 0.1}]},
        {
            "curve": [
                {"n_labels": 8, "e": 0.1},
                {"n_labels": 12, "e": 0.05},
                {"n_labels": 20, "e": 0.02},
            ]
        },
    ]
    m = mean_curve(runs, "e")
    assert m["n_labels"] == [8.0, 12.0, 16.0]  # common range only
    assert m["mean"][0] == pytest.approx(0.2)  # geometric mean of 0.4 and 0.1
    assert m["min"][0] == pytest.approx(0.1) and m["max"][0] == pytest.approx(0.4)
    assert m["mean"][1] == pytest.approx(math.sqrt(0.2 * 0.05))  # seed 0 interpolated in log


# --------------------------------------------------------------------------- properties
@pytest.fixture(scope="module")
def emt_props() -> dict[str, float]:
    return property_checks(EMT(), "Cu", "fcc", 3.61)


def test_properties_of_emt_copper(emt_props: dict[str, float]) -> None:
    p = emt_props
    assert p["lattice_constant"] == pytest.approx(3.59, abs=0.01)  # EMT Cu
    assert 120 < p["bulk_modulus_GPa"] < 150
    b_elastic = (p["C11_GPa"] + 2 * p["C12_GPa"]) / 3  # cubic: B = (C11 + 2 C12) / 3
    assert b_elastic == pytest.approx(p["bulk_modulus_GPa"], rel=0.02)
    assert p["C11_GPa"] > p["C12_GPa"] > 0 and p["C44_GPa"] > 0  # Born stability
    assert 0.5 < p["vacancy_formation_relaxed_eV"] <= p["vacancy_formation_unrelaxed_eV"] < 2.0


def test_labeler_calculator_is_the_oracle() -> None:
    from dft_adapters import get_labeler

    calc = LabelerCalculator(get_labeler("emt"))
    a = equation_of_state(calc, n_points=5)
    b = equation_of_state(EMT(), n_points=5)
    assert a["lattice_constant"] == pytest.approx(b["lattice_constant"], rel=1e-6)
    c = cubic_elastic_constants(calc, a=b["lattice_constant"])
    d = cubic_elastic_constants(EMT(), a=b["lattice_constant"])
    assert c["C44_GPa"] == pytest.approx(d["C44_GPa"], rel=1e-6)
    v = vacancy_formation_energy(calc, a=3.59, repeat=2, relax=False)
    assert v["unrelaxed_eV"] > 0


def test_compare_properties_percentages() -> None:
    out = compare_properties(
        {"lattice_constant": 3.6, "energy_per_atom": 1.0},
        {"lattice_constant": 3.5, "energy_per_atom": -0.1},
    )
    assert set(out) == {"lattice_constant"}  # absolute energies are not comparable
    assert out["lattice_constant"]["diff_percent"] == pytest.approx(100 * 0.1 / 3.5)


# --------------------------------------------------------------------------- config
def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="iteratons"):
        load_bench_config(CONFIG, {"iteratons": 3})
    with pytest.raises(ConfigError, match="selection"):
        load_bench_config(CONFIG, {"campaign_overrides": {"selection": {"strategy": "best"}}})
    with pytest.raises(ConfigError, match="no such file"):
        load_bench_config(tmp_path / "missing.yaml")


def test_default_config_is_the_documented_case() -> None:
    bench, campaign = load_bench_config(CONFIG)
    assert bench.arms == ["al", "max-first", "random"] and len(bench.seeds) >= 2
    assert campaign.labeler.name == "emt" and campaign.selection.strategy == "fps"
    temps = [w.temperature for w in campaign.exploration.walkers]
    assert min(temps) == 300 and max(temps) == 1500


def test_test_set_covers_the_regimes() -> None:
    bench, campaign = load_bench_config(CONFIG, REDUCED)
    test = build_test_set(bench, campaign, seed=1, n_frames=1)
    regimes = {a.info["regime"] for a in test}
    assert {"vacancy", "surface111", "bulk-300K", "bulk-1500K", "strain+0.02"} <= regimes
    vac = next(a for a in test if a.info["regime"] == "vacancy")
    assert len(vac) == 107
    slab = next(a for a in test if a.info["regime"].startswith("surface"))
    assert not slab.pbc[2]
    for a in test:  # oracle labels, consistent with EMT
        ref = a.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(a.arrays["REF_forces"], ref.get_forces(), atol=1e-8)


# --------------------------------------------------------------------------- reduced run
@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, float]:
    bench, campaign = load_bench_config(CONFIG, REDUCED)
    out = tmp_path_factory.mktemp("al-bench")
    t0 = time.perf_counter()
    report = run_benchmark(bench, campaign, out)
    return report, out, time.perf_counter() - t0


def _walk(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _walk(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [x for i, v in enumerate(obj) for x in _walk(v, f"{path}[{i}]")]
    return [(path, obj)]


def test_reduced_report_structure(reduced: tuple[dict[str, Any], Path, float]) -> None:
    report, out, wall = reduced
    data = json.loads((out / "report.json").read_text())
    for key in (
        "curves",
        "headline",
        "uncertainty",
        "properties",
        "targets",
        "test_set",
        "machine",
        "runs",
        "wall_s",
        "final_per_regime_force_rmse",
    ):
        assert key in data, key
    assert set(data["curves"]) == {"al", "max-first", "random"}
    for arm, c in data["curves"].items():
        f = c["force_rmse"]
        assert f["n_labels"][0] == 8, arm  # every arm starts from the same bootstrap set
        assert len(f["n_labels"]) >= 2 and f["n_labels"] == sorted(f["n_labels"])
        assert all(lo <= m <= hi for lo, m, hi in zip(f["min"], f["mean"], f["max"], strict=True))
    start = {arm: c["force_rmse"]["mean"][0] for arm, c in data["curves"].items()}
    assert len({round(v, 9) for v in start.values()}) == 1  # same initial committee
    for run in data["runs"]:
        assert len(run["curve"]) == 3  # initial + 2 iterations
        assert run["curve"][1]["n_labels"] - run["curve"][0]["n_labels"] <= 8  # label budget
    h = data["headline"]["force"]
    assert h["error_ratio_at_equal_labels"] > 0
    assert set(data["properties"]["al_vs_oracle"]) >= {
        "lattice_constant",
        "bulk_modulus_GPa",
        "C11_GPa",
        "C12_GPa",
        "C44_GPa",
        "vacancy_formation_relaxed_eV",
    }
    u = data["uncertainty"]
    assert -1 <= u["spearman_test"] <= 1
    assert len(u["test_max_dev"]) == data["test_set"]["n_test"]
    assert u["calibration"]["method"] == "scale" and u["calibration"]["scale"] > 0
    assert sum(b["n"] for b in u["calibration_curve_test"]) == data["test_set"]["n_test"]
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary_lines(report)
    assert wall < 240  # ~60 s on a quiet 2-core machine


def test_reduced_report_numbers_are_finite(reduced: tuple[dict[str, Any], Path, float]) -> None:
    _, out, _ = reduced
    text = (out / "report.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))
    # Optional by design: "not reached" headline fields, and config echoes.
    optional = {"labels_to_reach", "labels_ratio", "picked_mean_dev", "measured"}
    checked = 0
    for section in (
        "curves",
        "headline",
        "uncertainty",
        "properties",
        "runs",
        "test_set",
        "final_per_regime_force_rmse",
    ):
        for path, value in _walk(data[section], section):
            if value is None:
                assert path.rsplit(".", 1)[-1] in optional, path
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                assert math.isfinite(value), path
                checked += 1
    assert checked > 100


def test_checkpoint_stores_calibration(reduced: tuple[dict[str, Any], Path, float]) -> None:
    from mlip_core.checkpoint import load_committee
    from mlip_core.uncertainty import Calibration

    report, _, _ = reduced
    run = next(r for r in report["runs"] if r["arm"] == "al")
    _, meta = load_committee(run["checkpoint"])
    cal = Calibration.from_dict(meta["calibration"])
    assert cal.method == "scale" and cal.scale == pytest.approx(run["calibration"]["scale"])


def test_reanalyse_reproduces_the_analysis(reduced: tuple[dict[str, Any], Path, float]) -> None:
    _, out, _ = reduced
    before = json.loads((out / "report.json").read_text())
    after = reanalyse(out)
    assert after["headline"]["force"]["error_ratio_at_equal_labels"] == pytest.approx(
        before["headline"]["force"]["error_ratio_at_equal_labels"]
    )
    a, b = _walk(after["curves"]), _walk(before["curves"])
    assert [p for p, _ in a] == [p for p, _ in b]
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-12)


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workflows.cli import app

    bad = tmp_path / "b.yaml"
    bad.write_text(f"campaign: {ROOT / 'examples' / 'cu_emt.yaml'}\niterations: 0\n")
    res = CliRunner().invoke(app, ["bench", "al-efficiency", str(bad)])
    assert res.exit_code == 2
