"""Tests for mlip_core.calibration: deviation -> error maps, per regime, and their coverage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlip_core.calibration import (
    Calibration,
    RegimeCalibration,
    coverage_report,
    fit_calibration,
    fit_regime_calibration,
)

# ----------------------------------------------------------------------------- calibration


def _synthetic(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True error = 4 * deviation * lognormal noise with median 1 (as measured in notes/mlip.md)."""
    rng = np.random.default_rng(seed)
    dev = rng.uniform(0.01, 0.5, size=n)
    err = 4.0 * dev * rng.lognormal(mean=0.0, sigma=0.3, size=n)
    return dev, err


def test_scale_calibration_recovers_factor_four() -> None:
    dev, err = _synthetic()
    cal = fit_calibration(dev, err, method="scale")
    assert cal.method == "scale"
    assert cal.scale == pytest.approx(4.0, rel=0.05)
    assert cal(0.25) == pytest.approx(0.25 * cal.scale)
    np.testing.assert_allclose(cal(np.array([0.0, 0.1])), [0.0, 0.1 * cal.scale])
    assert cal.n_points == 400
    assert cal.spearman is not None and cal.spearman > 0.8


def test_scale_calibration_is_robust_to_outliers() -> None:
    dev, err = _synthetic()
    err = err.copy()
    err[:20] *= 100.0  # 5 % wild outliers barely move a median
    assert fit_calibration(dev, err).scale == pytest.approx(4.0, rel=0.1)


def test_scale_calibration_ignores_zero_deviations() -> None:
    cal = fit_calibration([0.0, 0.1, 0.2, 0.3], [5.0, 0.4, 0.8, 1.2])
    assert cal.scale == pytest.approx(4.0)


def test_isotonic_is_exact_on_monotone_data() -> None:
    x = np.array([0.1, 0.2, 0.3, 0.5, 0.8])
    y = np.array([0.2, 0.5, 0.6, 1.5, 3.0])
    cal = fit_calibration(x, y, method="isotonic")
    np.testing.assert_allclose(cal(x), y)
    # linear interpolation between knots, flat outside
    assert cal(0.4) == pytest.approx(1.05)
    assert cal(0.0) == pytest.approx(0.2)
    assert cal(10.0) == pytest.approx(3.0)


def test_isotonic_pools_violators() -> None:
    # (0.1, 1), (0.2, 3), (0.3, 2): the violating pair pools to 2.5.
    cal = fit_calibration([0.1, 0.2, 0.3], [1.0, 3.0, 2.0], method="isotonic")
    np.testing.assert_allclose(cal(np.array([0.1, 0.2, 0.3])), [1.0, 2.5, 2.5])


def test_isotonic_is_monotone_and_least_squares_on_noisy_data() -> None:
    dev, err = _synthetic(n=300, seed=3)
    cal = fit_calibration(dev, err, method="isotonic")
    grid = np.linspace(0.0, 0.6, 500)
    assert np.all(np.diff(cal(grid)) >= 0)
    assert np.all(np.diff(cal.x) > 0)
    # PAV preserves the total (each pooled block keeps its mean)
    order = np.argsort(dev)
    assert cal(dev[order]).sum() == pytest.approx(err.sum(), rel=1e-9)
    # and fits better than any monotone competitor we can easily build, e.g. the scale map
    scale = fit_calibration(dev, err, method="scale")
    assert np.sum((cal(dev) - err) ** 2) <= np.sum((scale(dev) - err) ** 2)


def test_isotonic_pools_tied_deviations() -> None:
    cal = fit_calibration([0.1, 0.1, 0.2, 0.3], [1.0, 3.0, 2.5, 4.0], method="isotonic")
    assert cal(0.1) == pytest.approx(2.0)
    assert cal(0.2) == pytest.approx(2.5)


@pytest.mark.parametrize("method", ["scale", "isotonic"])
def test_calibration_round_trip(method: str) -> None:
    dev, err = _synthetic(n=50, seed=4)
    cal = fit_calibration(dev, err, method=method)
    data = json.loads(json.dumps(cal.to_dict()))
    back = Calibration.from_dict(data)
    assert back == cal
    grid = np.linspace(0, 1, 17)
    np.testing.assert_array_equal(back(grid), cal(grid))


def test_deviation_for_inverts_the_map() -> None:
    scale = Calibration(method="scale", scale=4.0)
    assert scale.deviation_for(1.0) == pytest.approx(0.25)
    iso = fit_calibration([0.1, 0.2, 0.4], [0.5, 1.0, 2.0], method="isotonic")
    assert iso.deviation_for(1.5) == pytest.approx(0.3)
    assert iso(iso.deviation_for(0.75)) == pytest.approx(0.75)
    assert iso.deviation_for(0.1) == 0.0
    assert iso.deviation_for(5.0) == float("inf")


@pytest.mark.parametrize(
    ("dev", "err", "match"),
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], "same length"),
        ([0.1, -0.2, 0.3], [0.1, 0.2, 0.3], "deviations must be non-negative"),
        ([0.1, 0.2, 0.3], [0.1, -0.2, 0.3], "errors must be non-negative"),
        ([0.1, np.nan, 0.3], [0.1, 0.2, 0.3], r"deviations contain NaN.*\[1\]"),
        ([0.1, 0.2, 0.3], [np.inf, 0.2, 0.3], "errors contain NaN"),
        ([0.1, 0.2], [0.1, 0.2], "too few points"),
        ([[0.1, 0.2, 0.3]], [[0.1, 0.2, 0.3]], "1-D"),
        ([0.0, 0.0, 0.0], [0.1, 0.2, 0.3], "all deviations are zero"),
    ],
)
def test_fit_calibration_bad_input(dev: list, err: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_calibration(dev, err, method="scale")


def test_fit_calibration_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown calibration method 'linear'"):
        fit_calibration([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], method="linear")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"scale": 2.0}, "missing the key 'method'"),
        ({"method": "scale", "scale": -1.0}, "positive scale"),
        ({"method": "isotonic", "x": [0.1, 0.2], "y": [1.0]}, "equal non-zero length"),
        ({"method": "isotonic", "x": [0.1, 0.2], "y": [2.0, 1.0]}, "non-decreasing"),
        ({"method": "scale", "scale": 2.0, "bogus": 1}, "unknown calibration keys"),
    ],
)
def test_from_dict_rejects_bad_data(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Calibration.from_dict(data)


# ----------------------------------------------------------------------------- conformal


def _ratio_frames(rng: np.random.Generator, n: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose error is ``ratio * deviation`` times a log-normal factor."""
    dev = rng.uniform(0.01, 0.5, n)
    return dev, ratio * dev * rng.lognormal(0.0, 0.4, n)


def test_conformal_bound_covers_its_target_on_new_frames() -> None:
    # split conformal: on frames exchangeable with the fitting ones, error <= bound holds with
    # probability >= coverage (and < coverage + 1/(n+1)); averaged over 200 draws
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(200):
        dev, err = _ratio_frames(rng, 40, 2.0)
        cal = fit_calibration(dev, err, "conformal", coverage=0.9)
        new_dev, new_err = _ratio_frames(rng, 200, 2.0)
        covered.append(np.mean(new_err <= cal(new_dev)))
    assert 0.9 <= float(np.mean(covered)) <= 0.9 + 1 / 41 + 0.01
    assert cal.coverage == 0.9 and cal.method == "conformal"
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_conformal_needs_enough_frames() -> None:
    dev = np.linspace(0.1, 0.8, 8)
    with pytest.raises(ValueError, match="at least 9 frames"):
        fit_calibration(dev, 2 * dev, "conformal", coverage=0.9)
    with pytest.raises(ValueError, match="coverage"):
        fit_calibration(dev, 2 * dev, "conformal", coverage=1.0)


def test_regime_calibration_fits_each_regime_and_pools_the_rest() -> None:
    # two regimes whose errors are 1.6x and 2.2x the deviation (issue 16's measured spread):
    # one global factor under-covers one and over-covers the other; per regime both hold
    rng = np.random.default_rng(1)
    d1, e1 = _ratio_frames(rng, 300, 1.6)
    d2, e2 = _ratio_frames(rng, 300, 2.2)
    d3, e3 = _ratio_frames(rng, 5, 1.0)  # too few frames for its own map
    regimes = ["bulk"] * 300 + ["melt"] * 300 + ["rare"] * 5
    cal = fit_regime_calibration(
        np.r_[d1, d2, d3], np.r_[e1, e2, e3], regimes, coverage=0.9, min_points=10
    )
    assert set(cal.by_regime) == {"bulk", "melt"}
    assert cal.for_regime("rare") is cal.pooled
    t1, f1 = _ratio_frames(rng, 2000, 1.6)
    t2, f2 = _ratio_frames(rng, 2000, 2.2)
    report = coverage_report(cal, np.r_[t1, t2], np.r_[f1, f2], ["bulk"] * 2000 + ["melt"] * 2000)
    for name in ("bulk", "melt"):
        assert 0.85 <= report[name]["covered"] <= 0.95, report
        assert report[name]["target"] == 0.9 and report[name]["n"] == 2000
    pooled_only = RegimeCalibration(pooled=cal.pooled)
    skewed = coverage_report(
        pooled_only, np.r_[t1, t2], np.r_[f1, f2], ["bulk"] * 2000 + ["melt"] * 2000
    )
    assert skewed["bulk"]["covered"] - skewed["melt"]["covered"] > 0.1, skewed
    again = RegimeCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal


def test_regime_calibration_bad_input() -> None:
    with pytest.raises(ValueError, match="2 deviations but 1 regimes"):
        fit_regime_calibration([0.1, 0.2], [0.1, 0.2], ["a"])
    with pytest.raises(ValueError, match="missing the key 'pooled'"):
        RegimeCalibration.from_dict({"by_regime": {}})
