"""Tests for mlip_core.descriptors: invariances, size-intensivity, geometry sensitivity."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from mlip_core.descriptors import descriptor_matrix, structure_descriptor


@pytest.fixture
def cuau() -> Atoms:
    a = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    a.numbers[[0, 5, 9, 20]] = 79  # some Au
    a.rattle(0.1, seed=3)
    return a


def test_layout_and_length(cuau: Atoms) -> None:
    d = structure_descriptor(cuau, n_radial=10, n_angular=7)
    # 2 species -> 3 pairs x 10 radial + 2 centres x 7 angular
    assert d.shape == (3 * 10 + 2 * 7,)
    assert np.all(np.isfinite(d)) and np.all(d >= 0)


def test_translation_and_wrap_invariance(cuau: Atoms) -> None:
    d0 = structure_descriptor(cuau)
    b = cuau.copy()
    b.translate([1.3, -0.7, 2.9])
    b.wrap()
    np.testing.assert_allclose(structure_descriptor(b), d0, atol=1e-10)


def test_rotation_invariance(cuau: Atoms) -> None:
    d0 = structure_descriptor(cuau)
    rot = Rotation.from_euler("xyz", [0.3, 1.1, -0.4]).as_matrix()
    b = cuau.copy()
    b.set_cell(cuau.cell[:] @ rot.T, scale_atoms=False)
    b.positions = cuau.positions @ rot.T
    np.testing.assert_allclose(structure_descriptor(b), d0, atol=1e-10)


def test_permutation_invariance(cuau: Atoms) -> None:
    d0 = structure_descriptor(cuau)
    perm = np.random.default_rng(0).permutation(len(cuau))
    np.testing.assert_allclose(structure_descriptor(cuau[perm]), d0, atol=1e-10)


def test_swapping_species_is_not_a_symmetry(cuau: Atoms) -> None:
    b = cuau.copy()
    # swap the element of a Cu and an Au atom at different environments
    b.numbers[0], b.numbers[1] = cuau.numbers[1], cuau.numbers[0]
    assert not np.allclose(structure_descriptor(b), structure_descriptor(cuau), atol=1e-6)


def test_size_intensive(cuau: Atoms) -> None:
    np.testing.assert_allclose(
        structure_descriptor(cuau.repeat((2, 1, 3))), structure_descriptor(cuau), atol=1e-10
    )


def test_sees_angles_at_fixed_bond_lengths() -> None:
    """A-B-A trimers with the same two bond lengths but angles 90 vs 150 degrees."""

    def trimer(theta_deg: float) -> Atoms:
        t = np.radians(theta_deg)
        return Atoms("OHH", positions=[[0, 0, 0], [1.0, 0, 0], [np.cos(t), np.sin(t), 0]])

    kw = {"r_cut": 1.2, "r_cut_angular": 1.2, "n_radial": 8, "n_angular": 21}
    a, b = structure_descriptor(trimer(90), **kw), structure_descriptor(trimer(150), **kw)
    # H-H distances (1.41 / 1.93 Å) are beyond r_cut: the radial part is identical ...
    np.testing.assert_allclose(a[: 3 * 8], b[: 3 * 8], atol=1e-12)
    # ... and only the O-centred angle histogram tells them apart, peaked at cos(theta)
    grid = np.linspace(-1, 1, 21)
    ang_a = a[3 * 8 : 3 * 8 + 21]  # centre species sorted: H (1) first, then O (8)
    ang_o_a = a[3 * 8 + 21 :]
    ang_o_b = b[3 * 8 + 21 :]
    assert np.allclose(ang_a, 0)  # H has a single neighbour within 1.2 Å: no angle
    assert grid[np.argmax(ang_o_a)] == pytest.approx(np.cos(np.radians(90)), abs=0.06)
    assert grid[np.argmax(ang_o_b)] == pytest.approx(np.cos(np.radians(150)), abs=0.06)


def test_smooth_when_neighbour_crosses_cutoff() -> None:
    def dimer(r: float) -> np.ndarray:
        return structure_descriptor(
            Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]), r_cut=3.0, r_cut_angular=3.0
        )

    assert np.abs(dimer(2.999) - dimer(3.001)).max() < 1e-5
    assert np.all(dimer(3.001) == 0)


def test_distinguishes_strain_and_phase() -> None:
    fcc = bulk("Cu", "fcc", a=3.61, cubic=True)
    d_fcc = structure_descriptor(fcc)
    d_strained = structure_descriptor(bulk("Cu", "fcc", a=3.75, cubic=True))
    d_bcc = structure_descriptor(bulk("Cu", "bcc", a=2.87, cubic=True))
    assert np.linalg.norm(d_fcc - d_strained) > 0.1
    assert np.linalg.norm(d_fcc - d_bcc) > 0.1


def test_descriptor_matrix_uses_union_of_species(cuau: Atoms) -> None:
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    m = descriptor_matrix([cu, cuau])
    assert m.shape == (2, structure_descriptor(cuau).size)
    np.testing.assert_allclose(m[1], structure_descriptor(cuau))
    np.testing.assert_allclose(m[0], structure_descriptor(cu, species=[29, 79]))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"element\(s\) \['Au'\]"):
        structure_descriptor(Atoms("CuAu", positions=[[0, 0, 0], [2, 0, 0]]), species=[29])
    with pytest.raises(ValueError, match="no atoms"):
        structure_descriptor(Atoms())
    a = Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        structure_descriptor(a)
    with pytest.raises(ValueError, match="r_cut_angular"):
        structure_descriptor(bulk("Cu"), r_cut=3.0, r_cut_angular=4.0)


def test_fast_for_108_atoms() -> None:
    a = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    a.rattle(0.05, seed=0)
    structure_descriptor(a)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        structure_descriptor(a)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 0.02  # ~3 ms measured; loose bound for a loaded CI box
