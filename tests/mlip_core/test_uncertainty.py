"""Tests for mlip_core.uncertainty: the committee deviation metric and the rank correlation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from mlip_core.uncertainty import (
    atomic_force_deviation,
    energy_deviation,
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
