"""Tests for mlip_core.uncertainty: the committee deviation metric and its calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from mlip_core.uncertainty import (
    Calibration,
    atomic_force_deviation,
    energy_deviation,
    fit_calibration,
    max_force_deviation,
    spearman,
)

# ----------------------------------------------------------------------------- deviation


def test_atomic_force_deviation_hand_computed() -> None:
    # K=2 members, N=2 atoms. Atom 0: members differ by (2, 0, 0) -> mean (1, 0, 0),
    # each member is 1 eV/Å from the mean -> sigma_0 = sqrt((1 + 1) / 2) = 1.
    # Atom 1: members (0, 3, 4) and (0, -3, -4): mean 0, each |.| = 5 -> sigma_1 = 5.
    f = np.array(
        [
            [[0.0, 0.0, 0.0], [0.0, 3.0, 4.0]],
            [[2.0, 0.0, 0.0], [0.0, -3.0, -4.0]],
        ]
    )
    np.testing.assert_allclose(atomic_force_deviation(f), [1.0, 5.0])
    assert max_force_deviation(f) == pytest.approx(5.0)


def test_deviation_is_population_not_sample_std() -> None:
    # Three members on one atom with x-forces 0, 1, 2: population variance 2/3,
    # sample variance 1. The pesflow definition is the population one.
    f = np.zeros((3, 1, 3))
    f[:, 0, 0] = [0.0, 1.0, 2.0]
    assert atomic_force_deviation(f)[0] == pytest.approx(np.sqrt(2.0 / 3.0))
    assert atomic_force_deviation(f)[0] != pytest.approx(1.0)


def test_deviation_matches_vector_formula_on_random_committee() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 7, 3))
    expected = np.array(
        [
            np.sqrt(np.mean([np.sum((f[k, i] - f[:, i].mean(0)) ** 2) for k in range(5)]))
            for i in range(7)
        ]
    )
    np.testing.assert_allclose(atomic_force_deviation(f), expected)


def test_deviation_is_rotation_invariant_and_zero_for_agreeing_members() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(4, 6, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    np.testing.assert_allclose(atomic_force_deviation(f @ q.T), atomic_force_deviation(f))
    same = np.repeat(f[:1], 4, axis=0)
    np.testing.assert_allclose(atomic_force_deviation(same), 0.0, atol=1e-15)


def test_relative_deviation_divides_by_mean_force_plus_eps() -> None:
    f = np.zeros((2, 2, 3))
    f[0, 0] = [9.0, 0.0, 0.0]  # atom 0 mean force (10, 0, 0), sigma 1
    f[1, 0] = [11.0, 0.0, 0.0]
    f[0, 1] = [-1.0, 0.0, 0.0]  # atom 1 mean force 0, sigma 1
    f[1, 1] = [1.0, 0.0, 0.0]
    rel = atomic_force_deviation(f, relative=True, eps=1.0)
    np.testing.assert_allclose(rel, [1.0 / 11.0, 1.0 / 1.0])
    np.testing.assert_allclose(atomic_force_deviation(f, relative=True, eps=0.5), [1 / 10.5, 2.0])
    assert max_force_deviation(f, relative=True) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="eps"):
        atomic_force_deviation(f, relative=True, eps=0.0)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((4, 3), "shape"),
        ((2, 4, 2), "shape"),
        ((1, 4, 3), "at least 2 members"),
        ((2, 2, 3, 1), "shape"),
    ],
)
def test_deviation_shape_errors(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        atomic_force_deviation(np.zeros(shape))


def test_max_deviation_of_empty_structure_raises() -> None:
    with pytest.raises(ValueError, match="no atoms"):
        max_force_deviation(np.zeros((2, 0, 3)))


def test_energy_deviation() -> None:
    assert energy_deviation([1.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        energy_deviation([1.0])


# ----------------------------------------------------------------------------- spearman


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, size=40).astype(float)
    y = x + rng.normal(size=40)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [([1, 2], [1, 2, 3], "same length"), ([1], [1], "at least 2"), ([1, np.nan], [1, 2], "finite")],
)
def test_spearman_bad_input(x: list[float], y: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spearman(x, y)


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
