"""Physics of the native committee potential: invariances, conservative forces, stress,
extensivity, locality, padding and ordering independence (random structures, float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteePotential, LoopCommittee, ModelConfig
from mlip_core.neighbors import build_graph

from .conftest import random_structure

TOL = 1e-10


def predict(model: CommitteePotential, atoms: Atoms, stress: bool = False, **kw):
    g = build_graph(atoms, model.cutoff, model.species_index, **kw)
    out = model.predict(g, compute_stress=stress)
    e = out.energy[:, 0].detach().numpy()
    f = out.forces.detach().numpy()
    s = out.stress[:, 0].detach().numpy() if stress else None
    return e, f, s


@pytest.fixture(scope="module")
def structure() -> Atoms:
    return random_structure(["Cu"] * 8 + ["O"] * 5 + ["H"] * 4, seed=3)


def test_translation_invariance(model64, structure):
    e0, f0, s0 = predict(model64, structure, stress=True)
    moved = structure.copy()
    moved.positions += np.array([0.37, -1.21, 2.9])
    e1, f1, s1 = predict(model64, moved, stress=True)
    np.testing.assert_allclose(e1, e0, rtol=0, atol=TOL * 100)
    np.testing.assert_allclose(f1, f0, rtol=0, atol=TOL * 100)
    np.testing.assert_allclose(s1, s0, rtol=0, atol=TOL * 100)


def test_rotation_invariance_and_covariance(model64, structure):
    e0, f0, s0 = predict(model64, structure, stress=True)
    rot = Rotation.random(random_state=7).as_matrix()
    turned = structure.copy()
    turned.set_cell(structure.cell.array @ rot.T, scale_atoms=False)
    turned.positions = structure.positions @ rot.T
    e1, f1, s1 = predict(model64, turned, stress=True)
    np.testing.assert_allclose(e1, e0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(f1, f0 @ rot.T, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s1, rot @ s0 @ rot.T, rtol=0, atol=1e-9)


def test_molecule_rotation_non_periodic(model64):
    mol = molecule("H2O")
    e0, f0, _ = predict(model64, mol)
    rot = Rotation.random(random_state=1).as_matrix()
    turned = mol.copy()
    turned.positions = mol.positions @ rot.T
    e1, f1, _ = predict(model64, turned)
    np.testing.assert_allclose(e1, e0, atol=1e-10)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-10)
    # no net force on an isolated molecule (Newton's third law from translation invariance)
    np.testing.assert_allclose(f0.sum(axis=1), 0.0, atol=1e-10)


def test_permutation_of_all_atoms(model64, structure):
    e0, f0, _ = predict(model64, structure)
    perm = np.random.default_rng(5).permutation(len(structure))
    e1, f1, _ = predict(model64, structure[perm])
    np.testing.assert_allclose(e1, e0, atol=1e-10)
    np.testing.assert_allclose(f1, f0[:, perm], atol=1e-10)


def test_swapping_different_species_changes_energy(model64, structure):
    e0, _, _ = predict(model64, structure)
    swapped = structure.copy()
    numbers = swapped.numbers.copy()
    i_cu, i_o = int(np.where(numbers == 29)[0][0]), int(np.where(numbers == 8)[0][0])
    numbers[i_cu], numbers[i_o] = numbers[i_o], numbers[i_cu]
    swapped.numbers = numbers
    e1, _, _ = predict(model64, swapped)
    # not a symmetry: every member changes far above float64 noise (~1e-12), some by meV
    assert np.all(np.abs(e1 - e0) > 1e-8)
    assert np.abs(e1 - e0).max() > 1e-4


def test_forces_are_minus_energy_gradient(model64, structure):
    _, f, _ = predict(model64, structure)
    h = 1e-5
    rng = np.random.default_rng(0)
    for i in rng.choice(len(structure), 4, replace=False):
        for d in range(3):
            plus, minus = structure.copy(), structure.copy()
            plus.positions[i, d] += h
            minus.positions[i, d] -= h
            fd = -(predict(model64, plus)[0] - predict(model64, minus)[0]) / (2 * h)
            np.testing.assert_allclose(f[:, i, d], fd, atol=1e-7, rtol=1e-6)


def test_stress_is_strain_derivative(model64, structure):
    _, _, s = predict(model64, structure, stress=True)
    h, vol = 1e-5, structure.get_volume()

    def strained(eps: np.ndarray) -> Atoms:
        a = structure.copy()
        a.set_cell(structure.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        return a

    for p, q in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        eps = np.zeros((3, 3))
        eps[p, q] = eps[q, p] = h
        de = predict(model64, strained(eps))[0] - predict(model64, strained(-eps))[0]
        fd = de / (2 * h) / vol / (1 if p == q else 2)
        np.testing.assert_allclose(s[:, p, q], fd, atol=1e-8, rtol=1e-5)


def test_extensive_supercell(model64):
    cell = random_structure(["Cu"] * 4 + ["O"] * 2, cell=5.0, min_dist=1.8, seed=9)
    e1, f1, s1 = predict(model64, cell, stress=True)
    sup = cell.repeat((2, 2, 2))
    e8, f8, s8 = predict(model64, sup, stress=True)
    np.testing.assert_allclose(e8, 8 * e1, rtol=1e-10)
    np.testing.assert_allclose(f8[:, : len(cell)], f1, atol=1e-9)
    np.testing.assert_allclose(s8, s1, atol=1e-10)


def test_locality_atoms_beyond_receptive_field_do_not_matter(model64):
    """Moving an atom farther than n_layers * r_c from atom 0 leaves atom 0's energy alone."""
    mol = Atoms("CuCuO", positions=[[0, 0, 0], [2.2, 0, 0], [30.0, 0, 0]], pbc=False)
    far = mol.copy()
    far.positions[2] = [30.0, 1.5, 0.7]
    g0 = build_graph(mol, model64.cutoff, model64.species_index)
    g1 = build_graph(far, model64.cutoff, model64.species_index)
    # compare the atomic energies of the Cu dimer through total - isolated O
    e0 = model64.predict(g0, compute_forces=False).energy
    e1 = model64.predict(g1, compute_forces=False).energy
    torch.testing.assert_close(e0, e1, atol=1e-12, rtol=0)


def test_smooth_at_cutoff(model64):
    """Energy and force go continuously to their isolated values as a pair crosses r_c."""
    rc = model64.cutoff
    energies = []
    for r in (rc - 1e-3, rc - 1e-4, rc + 1e-4):
        dimer = Atoms("CuO", positions=[[0, 0, 0], [r, 0, 0]], pbc=False)
        e, f, _ = predict(model64, dimer)
        energies.append(e)
        assert np.abs(f).max() < 1e-6
    assert np.abs(energies[1] - energies[2]).max() < 1e-9


def test_padding_does_not_change_results(model64, structure):
    e0, f0, s0 = predict(model64, structure, stress=True)
    g = build_graph(structure, model64.cutoff, model64.species_index)
    e1, f1, s1 = predict(model64, structure, stress=True, pad_to=g.max_neighbors + 17)
    np.testing.assert_allclose(e1, e0, atol=1e-12)
    np.testing.assert_allclose(f1, f0, atol=1e-12)
    np.testing.assert_allclose(s1, s0, atol=1e-12)


def test_batch_equals_single(model64, structure):
    other = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    other.rattle(0.1, seed=2)
    g = build_graph([structure, other], model64.cutoff, model64.species_index)
    out = model64.predict(g, compute_stress=True)
    for b, at in enumerate([structure, other]):
        e, f, s = predict(model64, at, stress=True)
        np.testing.assert_allclose(out.energy[:, b].detach().numpy(), e, atol=1e-10)
        sl = slice(0, len(structure)) if b == 0 else slice(len(structure), None)
        np.testing.assert_allclose(out.forces[:, sl].detach().numpy(), f, atol=1e-10)
        np.testing.assert_allclose(out.stress[:, b].detach().numpy(), s, atol=1e-12)


def test_stacked_committee_equals_members_evaluated_alone(model64, structure):
    e, f, s = predict(model64, structure, stress=True)
    singles = [model64.select_members([k]) for k in range(model64.n_members)]
    loop = LoopCommittee(singles)
    g = build_graph(structure, loop.cutoff, loop.species_index)
    out = loop.predict(g, compute_stress=True)
    np.testing.assert_allclose(out.energy[:, 0].detach().numpy(), e, atol=1e-10)
    np.testing.assert_allclose(out.forces.detach().numpy(), f, atol=1e-10)
    np.testing.assert_allclose(out.stress[:, 0].detach().numpy(), s, atol=1e-12)
    # members differ: independent initialisation
    assert np.ptp(e) > 1e-3


def test_float32_matches_float64(model64, structure):
    e64, f64, _ = predict(model64, structure)
    m32 = model64.select_members([0, 1, 2]).float()
    g = build_graph(structure, m32.cutoff, m32.species_index, dtype=torch.float32)
    out = m32.predict(g)
    np.testing.assert_allclose(out.energy[:, 0].detach().numpy(), e64, atol=2e-4)
    np.testing.assert_allclose(out.forces.detach().numpy(), f64, atol=2e-4)
    # reference energies stay float64 in a float32 model
    assert m32.reference_energies.dtype == torch.float64


def test_committee_mean_and_deviation_match_hand_computation(model64, structure):
    calc = CommitteeCalculator(model64)
    at = structure.copy()
    at.calc = calc
    e_members = [float(m) for m in predict(model64, structure)[0]]
    f_members = predict(model64, structure)[1]
    k, n = f_members.shape[:2]
    mean_f = [[sum(f_members[m][i][d] for m in range(k)) / k for d in range(3)] for i in range(n)]
    sigma = []
    for i in range(n):
        acc = 0.0
        for m in range(k):
            acc += sum((f_members[m][i][d] - mean_f[i][d]) ** 2 for d in range(3))
        sigma.append((acc / k) ** 0.5)
    assert at.get_potential_energy() == pytest.approx(sum(e_members) / k, abs=1e-12)
    np.testing.assert_allclose(at.get_forces(), mean_f, atol=1e-12)
    np.testing.assert_allclose(calc.get_property("forces_std", at), sigma, atol=1e-12)
    assert calc.get_property("max_force_dev", at) == pytest.approx(max(sigma), abs=1e-12)
    mean_e = sum(e_members) / k
    std_e = (sum((x - mean_e) ** 2 for x in e_members) / k) ** 0.5
    assert calc.get_property("energy_std", at) == pytest.approx(std_e, abs=1e-12)
    stress_members = calc.get_property("stress_committee", at)
    assert stress_members.shape == (k, 6)
    np.testing.assert_allclose(at.get_stress(), stress_members.mean(axis=0), atol=1e-14)
    for name in ("energy_committee", "forces_committee", "stress_committee", "max_force_dev_rel"):
        assert name in CommitteeCalculator.implemented_properties


def test_model_config_rejects_bad_values():
    with pytest.raises(ValueError, match="species"):
        ModelConfig(species=[])
    with pytest.raises(ValueError, match="cutoff"):
        ModelConfig(species=[29], cutoff=-1.0)
    with pytest.raises(ValueError, match="seeds"):
        ModelConfig(species=[29], n_members=3, seeds=[1, 2])


def test_embedded_first_layer_equals_general_message_passing(model64, structure):
    """The factorised first layer is an exact rewrite of the per-edge message passing."""
    g = build_graph(structure, model64.cutoff, model64.species_index)
    pos = g.positions
    vectors = pos[g.neighbors] - pos.unsqueeze(1) + g.shifts
    basis, ylm, _, _ = model64.edge_features(vectors, g.mask, with_jacobian=False)
    k = model64.n_members
    basis_k = basis.unsqueeze(0).expand(k, -1, -1, -1)
    ylm_k = ylm.unsqueeze(0).expand(k, -1, -1, -1)
    h = model64.embedding[:, g.species]
    onehot = torch.nn.functional.one_hot(g.species[g.neighbors], 3).double()
    layer = model64.layers[0]
    fast = layer.forward_embedded(h, model64.embedding, onehot, basis_k, ylm_k)
    general = layer(h, g.neighbors, basis_k, ylm_k)
    torch.testing.assert_close(fast, general, atol=1e-9, rtol=1e-7)
