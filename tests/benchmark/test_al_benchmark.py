"""The AL-efficiency benchmark (``benchmarks.al_efficiency``): analysis maths, property checks,
its config, and reduced end-to-end runs of the product's own loop.

The default suite runs one reduced benchmark (1 seed, 2 arms, 1 iteration, tiny trainings and
test set, ~20 s) in which the oracle calls are counted by instrumenting ASE's EMT calculator
(each label is one ``EMT.calculate``), not read from the database; a larger reduced run with
all arms and property checks is behind ``slow``; the full benchmark is ``make bench-science``.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.calculators.emt import EMT

from benchmarks.al_efficiency import (
    arm_config,
    build_test_set,
    headline,
    labels_to_reach,
    load_bench_config,
    mean_curve,
    reanalyse,
    run_benchmark,
    summary_lines,
)
from benchmarks.al_efficiency.__main__ import main
from benchmarks.al_efficiency.analysis import calls_to_reach
from benchmarks.al_efficiency.config import exploration_starts
from workflows.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "bench_cu_emt.yaml"

TINY: dict[str, Any] = {
    "seeds": [0],
    "iterations": 1,
    "workers": 1,
    "arms": ["fps", "random", "oracle-md"],
    "baseline": "random",
    "properties": False,
    "campaign_overrides": {
        "bootstrap": {"n_structures": 4},
        "validation": {"n_structures": 3, "min_per_regime": 1, "holdout_fraction": 0.0},
        "training": {"max_epochs": 10, "warm_start_epochs": 4, "max_time_s": None},
        "exploration": {
            "walkers": [
                {"temperature": 900, "steps": 30, "record_every": 5},
                {"temperature": 1200, "steps": 30, "record_every": 5},
            ]
        },
        "selection": {"max_per_iteration": 4},
    },
    "test_set": {
        "frames": 1,
        "validation_frames": 1,
        "equilibration": 5,
        "melt_equilibration": 10,
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
        "fps": {"force_rmse": _curve([8, 16, 24, 32], [0.4, 0.1, 0.05, 0.04])},
        "random": {"force_rmse": _curve([8, 16, 24, 32], [0.4, 0.2, 0.15, 0.1])},
    }
    h = headline(curves, arm="fps", baseline="random")
    assert h["reached"] and h["labels_to_reach"] == pytest.approx(16.0)
    assert h["labels_ratio"] == pytest.approx(0.5)
    budgets = {b["baseline_labels"]: b["labels_ratio"] for b in h["by_baseline_budget"]}
    assert budgets[16] == pytest.approx(12 / 16)  # reaches 0.2 halfway (log) from 8 to 16
    assert budgets[32] == pytest.approx(0.5)
    assert h["error_ratio_at_equal_labels"] == pytest.approx(0.4)
    worse = {"fps": curves["random"], "random": curves["fps"]}
    h2 = headline(worse, arm="fps", baseline="random")
    assert not h2["reached"] and h2["labels_ratio"] is None
    assert h2["gap_percent"] == pytest.approx(150.0)  # 0.1 vs 0.04


def test_calls_to_reach_every_regime() -> None:
    def run(arm: str, calls: list[int], bulk: list[float], melt: list[float]) -> dict[str, Any]:
        pts = [
            {
                "n_labels": 8 * (i + 1),
                "oracle_calls": c,
                "per_regime": {"bulk": {"force_rmse": b}, "melt": {"force_rmse": m}},
            }
            for i, (c, b, m) in enumerate(zip(calls, bulk, melt, strict=True))
        ]
        return {"arm": arm, "curve": pts}

    runs = [
        run("al", [10, 20, 40], [0.1, 0.04, 0.03], [0.2, 0.1, 0.05]),
        run("al", [10, 20, 40], [0.1, 0.05, 0.03], [0.2, 0.1, 0.025]),
        run("md", [10, 1000, 2000], [0.1, 0.02, 0.01], [0.4, 0.2, 0.1]),
    ]
    out = calls_to_reach(runs, ["al", "md"], 0.05)["arms"]
    # the worst regime decides: seed 0 reaches 0.05 at its last point (melt); seed 1 on the
    # log-linear segment from 0.1 (melt, 20 calls) to 0.03 (bulk, 40 calls)
    assert out["al"]["calls_per_seed"][0] == pytest.approx(40.0)
    assert out["al"]["calls_per_seed"][1] == pytest.approx(20 + 20 * math.log(2) / math.log(10 / 3))
    assert out["al"]["reached"] == 2 and out["al"]["per_regime_calls_mean"]["bulk"] < 21
    assert out["md"]["calls_mean"] is None and out["md"]["reached"] == 0
    assert out["md"]["final_worst_regime_force_rmse"] == pytest.approx(0.1)


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


# --------------------------------------------------------------------------- config
def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="iteratons"):
        load_bench_config(CONFIG, {"iteratons": 3})
    with pytest.raises(ConfigError, match=r"selection\.strategy"):
        load_bench_config(CONFIG, {"arms": ["fps", "best", "random"], "baseline": "random"})
    with pytest.raises(ConfigError, match="baseline"):
        load_bench_config(CONFIG, {"arms": ["fps", "max-first"]})
    with pytest.raises(ConfigError, match="no such file"):
        load_bench_config(tmp_path / "missing.yaml")


def test_default_config_is_the_documented_case() -> None:
    bench, campaign = load_bench_config(CONFIG)
    assert bench.arms == ["fps", "random", "random-all", "oracle-md"]
    assert bench.baseline == "random-all" and bench.target_force_rmse == 0.05
    assert bench.test_set.melt_temperature == 2500
    assert len(bench.seeds) >= 2
    assert campaign.labeler.name == "emt" and campaign.selection.strategy == "fps"
    temps = [w.temperature for w in campaign.exploration.walkers]
    assert min(temps) == 300 and max(temps) == 1500
    # every arm runs exactly iterations + 1 product iterations
    cv = campaign.convergence
    assert cv.max_iterations == bench.iterations + 1 and cv.patience == cv.max_iterations
    assert cv.label_budget is None
    # the campaign's three volumes, then the vacancy and the (111) slab
    starts = exploration_starts(campaign)
    assert [len(a) for a in starts] == [32, 32, 32, 31, 16]
    assert not starts[-1].pbc[2]


def test_arms_differ_only_in_selection_strategy() -> None:
    _, campaign = load_bench_config(CONFIG, TINY)
    a = arm_config(campaign, "fps", 3).model_dump(mode="json")
    b = arm_config(campaign, "random", 3).model_dump(mode="json")
    assert a["selection"]["strategy"] == "fps" and b["selection"]["strategy"] == "random"
    assert a["seed"] == b["seed"] == 3
    a.pop("selection"), b.pop("selection")
    assert a == b
    # random among every recorded frame: the trust window no longer filters below hi
    c = arm_config(campaign, "random-all", 3).model_dump(mode="json")
    assert c["selection"]["strategy"] == "random" and c["trust"]["lo"] == 0.0
    assert c["trust"]["hi"] == a["trust"]["hi"]
    c.pop("selection"), c.pop("trust"), a.pop("trust")
    assert c == a
    assert arm_config(campaign, "oracle-md", 3).model_dump(mode="json")["seed"] == 3


def test_test_set_covers_the_regimes() -> None:
    bench, campaign = load_bench_config(CONFIG, TINY)
    test = build_test_set(bench, campaign, seed=1, n_frames=1)
    regimes = {a.info["regime"] for a in test}
    assert {
        "vacancy",
        "surface111",
        "bulk-300K",
        "bulk-1500K",
        "strain+0.02",
        "melt-2500K",
    } <= regimes
    vac = next(a for a in test if a.info["regime"] == "vacancy")
    assert len(vac) == 107
    slab = next(a for a in test if a.info["regime"].startswith("surface"))
    assert not slab.pbc[2]
    for a in test:  # oracle labels, consistent with EMT
        ref = a.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(a.arrays["REF_forces"], ref.get_forces(), atol=1e-8)


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "b.yaml"
    bad.write_text(f"campaign: {ROOT / 'examples' / 'cu_emt.yaml'}\niterations: 0\n")
    assert main([str(bad)]) == 2
    assert "iterations" in capsys.readouterr().err


# --------------------------------------------------------------------------- reduced run
class _CountingEMT:
    """Counts ``EMT.calculate`` calls (one per label: every label builds its own EMT)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        self._lock = threading.Lock()
        orig = EMT.calculate

        def calculate(calc: EMT, *args: Any, **kwargs: Any) -> None:
            with self._lock:
                self.n += 1
            orig(calc, *args, **kwargs)

        monkeypatch.setattr(EMT, "calculate", calculate)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bench, campaign = load_bench_config(CONFIG, TINY)
    test = build_test_set(bench, campaign, seed=1000, n_frames=1)
    val = build_test_set(bench, campaign, seed=2000, n_frames=1)
    out = tmp_path_factory.mktemp("al-bench")
    counts: dict[str, int] = {}
    with pytest.MonkeyPatch.context() as mp:
        counter = _CountingEMT(mp)

        def log(line: str) -> None:  # called when each arm's campaign is done
            for arm in bench.arms:
                if line.strip().startswith(f"{arm} seed"):
                    counts[arm] = counter.n - sum(counts.values())

        t0 = time.perf_counter()
        report = run_benchmark(bench, campaign, out, log=log, test_sets=(test, val))
        wall = time.perf_counter() - t0
    return {"report": report, "out": out, "wall": wall, "counts": counts, "total": counter.n}


def test_tiny_run_reports_per_arm_errors(tiny: dict[str, Any]) -> None:
    report, out = tiny["report"], tiny["out"]
    data = json.loads((out / "report.json").read_text())
    assert set(data["curves"]) == {"fps", "random", "oracle-md"}
    for run in data["runs"]:
        curve = run["curve"]
        assert len(curve) == 2  # the first committee + 1 retraining
        assert curve[0]["n_labels"] == 4  # the bootstrap set
        assert 4 < curve[1]["n_labels"] <= 4 + 4  # label budget per iteration
        for p in curve:
            assert 0 < p["force_rmse"] < 5 and 0 < p["energy_rmse"] < 5
            assert set(p["per_regime"]) == set(data["test_set"]["regimes"])
        assert run["decision"]  # the product's own stop message
    first = {r["arm"]: r["curve"][0]["force_rmse"] for r in data["runs"]}
    assert first["fps"] == pytest.approx(first["random"], rel=1e-6)  # same first committee
    reach = data["calls_to_reach"]
    assert reach["target_force_rmse"] == 0.05 and set(reach["arms"]) == set(data["curves"])
    for r in reach["arms"].values():
        assert r["seeds"] == 1 and r["final_worst_regime_force_rmse"] > 0
    assert data["headline"]["force"]["arm"] == "fps"
    assert data["headline"]["force"]["baseline"] == "random"
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary_lines(report)
    assert tiny["wall"] < 120  # ~15 s on a quiet 2-core machine


def test_tiny_run_counts_every_oracle_call(tiny: dict[str, Any]) -> None:
    """Each arm's ``oracle_calls`` equals the labels EMT actually computed during its
    campaign (bootstrap 4 + validation 3 + up to 4 picks per iteration, 2 iterations); the
    oracle-MD arm's also count every MD step."""
    report, counts = tiny["report"], tiny["counts"]
    assert tiny["total"] == sum(counts.values()) > 0  # nothing else called the oracle
    for run in report["runs"]:
        n = counts[run["arm"]]
        assert run["oracle_calls"] == n, run["arm"]
        assert [p["oracle_calls"] for p in run["curve"]] == sorted(
            p["oracle_calls"] for p in run["curve"]
        )
        if run["arm"] == "oracle-md":
            # bootstrap 4 + validation 3, then 2 walkers x (30 steps + 1); the drawn frames'
            # labels are those steps' own results
            assert run["curve"][0]["oracle_calls"] == 4 + 3
            assert n == 4 + 3 + 2 * (30 + 1) and run["md_steps"] == 60
            continue
        assert run["curve"][0]["oracle_calls"] == 4 + 3
        assert 4 + 3 < n <= 4 + 3 + 2 * 4
        trained = run["curve"][-1]["n_labels"]
        assert trained == n - 3 - run["oracle_calls_unused"]  # validation, last picks: unused
        assert run["md_steps"] == 2 * (30 + 30)  # what oracle-driven MD would have cost
    assert report["oracle_calls"]["fps"]["mean"] == counts["fps"]


def test_tiny_report_is_finite_and_reanalysable(tiny: dict[str, Any]) -> None:
    out = tiny["out"]
    text = (out / "report.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))
    before = json.loads(text)
    after = reanalyse(out)
    assert after["headline"]["force"]["error_ratio_at_equal_labels"] == pytest.approx(
        before["headline"]["force"]["error_ratio_at_equal_labels"]
    )


def test_checkpoint_stores_calibration(tiny: dict[str, Any]) -> None:
    from mlip_core.calibration import Calibration
    from mlip_core.checkpoint import load_committee

    run = next(r for r in tiny["report"]["runs"] if r["arm"] == "fps")
    _, meta = load_committee(run["checkpoint"])
    cal = Calibration.from_dict(meta["calibration"])
    assert cal.method == "scale" and cal.scale == pytest.approx(run["calibration"]["scale"])


@pytest.mark.slow
def test_reduced_run_all_arms_with_properties(tmp_path: Path) -> None:
    """Three arms, two iterations, property checks: every section of the report is there and
    every number in it is finite."""
    over = {
        **TINY,
        "iterations": 2,
        "arms": ["fps", "max-first", "random"],
        "baseline": "random",
        "properties": True,
    }
    bench, campaign = load_bench_config(CONFIG, over)
    report = run_benchmark(bench, campaign, tmp_path)
    for key in ("curves", "headline", "uncertainty", "properties", "targets", "oracle_calls"):
        assert key in report, key
    assert set(report["properties"]["fps_vs_oracle"]) >= {
        "lattice_constant",
        "bulk_modulus_GPa",
        "C44_GPa",
        "vacancy_formation_relaxed_eV",
    }
    assert "force_max-first_vs_random" in report["headline"]
    text = (tmp_path / "report.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))


def test_gap_and_on_the_fly_arms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``gap`` arm (GAP backend, trust in eV) and the ``on-the-fly`` arm (exploration
    mode) run through the benchmark: one iteration each on the tiny config; the report has
    their errors, the Spearman of their own uncertainty (GAP: the GP sd) vs the error,
    oracle calls and wall times."""
    from tests._codes import require_quippy

    require_quippy()
    from benchmarks.al_efficiency.config import ARM_VARIANTS

    small = {"cutoff": 4.0, "l_max": 3, "n_max": 4, "n_sparse": 20, "n_sparse_2b": 8}
    gap_arm = {**ARM_VARIANTS["gap"], "model": {**ARM_VARIANTS["gap"]["model"], **small}}
    monkeypatch.setitem(ARM_VARIANTS, "gap", gap_arm)  # a GAP small enough for seconds
    over = copy.deepcopy(TINY)
    over["campaign_overrides"]["exploration"]["walkers"] = [
        {"temperature": 900, "steps": 20, "record_every": 5}
    ]
    bench, campaign = load_bench_config(
        CONFIG, {**over, "arms": ["gap", "on-the-fly"], "baseline": "gap"}
    )
    gap = arm_config(campaign, "gap", 0)
    assert gap.model.backend == "gap" and "channels" not in (gap.model.model_extra or {})
    assert arm_config(campaign, "on-the-fly", 0).exploration.mode == "on-the-fly"
    test = build_test_set(bench, campaign, seed=1000, n_frames=1)
    val = build_test_set(bench, campaign, seed=2000, n_frames=1)
    report = run_benchmark(bench, campaign, tmp_path, test_sets=(test, val))
    runs = {r["arm"]: r for r in report["runs"]}
    assert set(runs) == {"gap", "on-the-fly"}
    for r in runs.values():
        assert len(r["curve"]) == 2 and r["wall_s"] > 0
        assert 0 < r["curve"][-1]["force_rmse"] < 5
        assert r["curve"][-1]["elapsed_s"] > 0
        assert 4 + 3 < r["oracle_calls"] <= 4 + 3 + 2 * 4
    # on-the-fly: the walker runs its steps once over the campaign
    assert runs["on-the-fly"]["md_steps"] == 20
    assert 0 < report["uncertainty"]["test_max_dev"][0] < 1.0  # the GP sd, eV
    assert set(report["uncertainty"]["spearman_per_arm"]) == {"gap", "on-the-fly"}
    reach = report["calls_to_reach"]["arms"]
    assert set(reach) == {"gap", "on-the-fly"}
    assert all(r["wall_s_mean"] > 0 and len(r["seconds_per_seed"]) == 1 for r in reach.values())
    assert summary_lines(report)


def test_on_the_fly_arm_refuses_other_walker_kinds() -> None:
    _, campaign = load_bench_config(
        CONFIG,
        {
            **TINY,
            "campaign_overrides": {
                **TINY["campaign_overrides"],
                "exploration": {"walkers": [{"kind": "udd", "steps": 30}]},
            },
        },
    )
    with pytest.raises(ConfigError, match="md walkers only"):
        arm_config(campaign, "on-the-fly", 0)
