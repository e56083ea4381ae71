"""Contract every committee-model implementation must satisfy (native stacked, loop, MACE).

The physics checks that do not depend on the architecture: invariances, F = -dE/dr, stress as
the strain derivative, batching, extensivity, and the calculator's results contract.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteeModel, CommitteePotential, LoopCommittee, ModelConfig
from mlip_core.neighbors import build_graph


def _native() -> CommitteeModel:
    return CommitteePotential(
        ModelConfig(species=[29, 79], n_members=3, channels=8, energy_scale=0.5, seeds=[1, 2, 3])
    ).double()


def _native_two_layers() -> CommitteeModel:
    return CommitteePotential(
        ModelConfig(species=[29, 79], n_members=3, channels=8, n_layers=2, energy_scale=0.5)
    ).double()


def _loop() -> CommitteeModel:
    native = CommitteePotential(
        ModelConfig(species=[29, 79], n_members=2, channels=8, energy_scale=0.5, seeds=[4, 5])
    ).double()
    return LoopCommittee([native.select_members([0]), native.select_members([1])])


def _mace() -> CommitteeModel:
    mace_backend = pytest.importorskip("mlip_core.mace_backend", reason="mace-torch not installed")
    return mace_backend.mace_committee(2, [29, 79], dtype=torch.float64)


IMPLEMENTATIONS: dict[str, Callable[[], CommitteeModel]] = {
    "native-stacked": _native,
    "native-2-layers": _native_two_layers,
    "native-loop": _loop,
    "mace": _mace,
}


@pytest.fixture(scope="module", params=list(IMPLEMENTATIONS))
def model(request) -> CommitteeModel:
    m = IMPLEMENTATIONS[request.param]()
    assert isinstance(m, CommitteeModel)
    return m


@pytest.fixture(scope="module")
def alloy() -> Atoms:
    at = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    at.numbers[[1, 6, 11]] = 79
    at.rattle(0.08, seed=3)
    return at


def run(model: CommitteeModel, atoms: Atoms | list[Atoms], stress: bool = True):
    idx = {z: i for i, z in enumerate(model.species)}
    g = build_graph(atoms, model.cutoff, idx)
    out = model.predict(g, compute_stress=stress)
    return (
        out.energy.detach().numpy(),
        out.forces.detach().numpy(),
        None if out.stress is None else out.stress.detach().numpy(),
    )


def test_shapes_and_members(model, alloy):
    e, f, s = run(model, alloy)
    k = model.n_members
    assert e.shape == (k, 1) and f.shape == (k, len(alloy), 3) and s.shape == (k, 1, 3, 3)
    assert np.isfinite(e).all() and np.isfinite(f).all() and np.isfinite(s).all()
    assert np.ptp(e[:, 0]) > 0  # members differ


def test_invariances(model, alloy):
    e0, f0, s0 = run(model, alloy)
    rot = Rotation.random(random_state=2).as_matrix()
    turned = alloy.copy()
    turned.set_cell(alloy.cell.array @ rot.T)
    turned.positions = alloy.positions @ rot.T + np.array([0.3, -0.2, 1.1])
    e1, f1, s1 = run(model, turned)
    np.testing.assert_allclose(e1, e0, atol=1e-8)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-8)
    np.testing.assert_allclose(s1, rot @ s0 @ rot.T, atol=1e-9)
    perm = np.random.default_rng(0).permutation(len(alloy))
    e2, f2, _ = run(model, alloy[perm])
    np.testing.assert_allclose(e2, e0, atol=1e-8)
    np.testing.assert_allclose(f2, f0[:, perm], atol=1e-8)


def test_forces_and_stress_are_derivatives(model, alloy):
    _, f, s = run(model, alloy)
    h = 1e-5

    def energy(at: Atoms) -> np.ndarray:
        return run(model, at, stress=False)[0][:, 0]

    for i, d in [(0, 0), (5, 2), (11, 1)]:
        p, m = alloy.copy(), alloy.copy()
        p.positions[i, d] += h
        m.positions[i, d] -= h
        np.testing.assert_allclose(
            f[:, i, d], -(energy(p) - energy(m)) / (2 * h), atol=1e-6, rtol=1e-5
        )
    eps = np.zeros((3, 3))
    eps[0, 2] = eps[2, 0] = h
    p, m = alloy.copy(), alloy.copy()
    p.set_cell(alloy.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    m.set_cell(alloy.cell.array @ (np.eye(3) - eps), scale_atoms=True)
    fd = (energy(p) - energy(m)) / (2 * h) / alloy.get_volume() / 2
    np.testing.assert_allclose(s[:, 0, 0, 2], fd, atol=1e-8, rtol=1e-5)


def test_batch_and_extensivity(model, alloy):
    e1, f1, _ = run(model, alloy)
    sup = alloy.repeat((1, 1, 2))
    e2, _, _ = run(model, sup)
    np.testing.assert_allclose(e2, 2 * e1, rtol=1e-9)
    eb, fb, _ = run(model, [alloy, sup])
    np.testing.assert_allclose(eb[:, 0], e1[:, 0], atol=1e-8)
    np.testing.assert_allclose(eb[:, 1], e2[:, 0], atol=1e-8)
    np.testing.assert_allclose(fb[:, : len(alloy)], f1, atol=1e-8)


def test_calculator_contract(model, alloy):
    at = alloy.copy()
    at.calc = CommitteeCalculator(model)
    e = at.get_potential_energy()
    members = at.calc.get_property("energy_committee", at)
    assert e == pytest.approx(members.mean(), abs=1e-10)
    assert at.get_stress().shape == (6,)
    assert at.calc.get_property("max_force_dev", at) > 0
