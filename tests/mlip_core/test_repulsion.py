"""The ZBL physics baseline (mlip_core.repulsion): its value, derivatives and smoothness, the
residual training, checkpoints, and what it does to a trained committee at close contact."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from mlip_core.backends import NativeBackend, TrainRequest, residual_labels, train_with_repulsion
from mlip_core.calculator import CommitteeCalculator
from mlip_core.checkpoint import load_committee, save_committee
from mlip_core.contract import check_committee_model
from mlip_core.contract_model import alloy, pushed
from mlip_core.model import CommitteePotential, ModelConfig
from mlip_core.neighbors import build_graph
from mlip_core.repulsion import WithRepulsion, ZBLRepulsion, unwrap, zbl_energy
from mlip_core.training import TrainingConfig, evaluate_errors


def _labelled(n: int, seed: int = 0) -> list[Atoms]:
    """EMT labels of rattled, strained 32-atom fcc Cu cells."""
    out = []
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.61 * (1 + 0.02 * (i % 3 - 1)), cubic=True).repeat(2)
        a.rattle(0.05 + 0.1 * (i % 4) / 3, seed=seed + i)
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.info["REF_stress"] = a.get_stress()
        a.calc = None
        out.append(a)
    return out


def _train(repulsion: ZBLRepulsion | None, epochs: int = 40):
    tc = TrainingConfig(max_epochs=epochs, batch_size=4, seed=1, patience=epochs)
    req = TrainRequest(_labelled(12), [29], 3, 4.5, {"channels": 16}, tc)
    return train_with_repulsion(NativeBackend(), req, repulsion)


@pytest.fixture(scope="module")
def trained() -> WithRepulsion:
    """A 3-member native committee trained (40 epochs) on the residual of the baseline."""
    model = _train(ZBLRepulsion([29], cutoff=4.5)).model
    assert isinstance(model, WithRepulsion)
    return model


def _energies(model, structures: list[Atoms]) -> np.ndarray:
    """Members' energies (K, B) of a batch of structures, eV."""
    g = build_graph(structures, model.cutoff, model.species_index, dtype=model.dtype)
    return model.predict(g, compute_forces=False).energy.detach().double().numpy()


def _push_energy(model, distance: float = 1.4) -> tuple[float, np.ndarray | float]:
    """(EMT, the model's members) energy of pushing one atom of 108-atom fcc Cu to
    ``distance`` from its neighbour, eV (model None: EMT for both)."""
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    moved = pushed(cell, 0, 1, distance)
    emt = []
    for a in (cell, moved):
        a.calc = EMT()
        emt.append(a.get_potential_energy())
    e = _energies(model, [cell, moved])
    return emt[1] - emt[0], e[:, 1] - e[:, 0]


# ----------------------------------------------------------------------------- the baseline
def test_value_against_hand_computed_zbl_and_each_pair_counted_once() -> None:
    """Cu-Cu at 1.0 Å (S = 1), by hand: a = 0.46850 / (2 x 29^0.23) = 0.107976 Å,
    x = 9.26130, phi = 0.18175 e^-29.634 + 0.50986 e^-8.7268 + 0.28022 e^-3.7314
    + 0.02817 e^-1.8673 = 0 + 8.2687e-5 + 6.7140e-3 + 4.3536e-3 = 0.0111503,
    E = 29^2 x 14.399645 eV Å / 1.0 Å x phi = 12110.10 eV x 0.0111503 = 135.031 eV.
    The neighbor list is full (i->j and j->i): the dimer still gets one pair energy."""
    assert zbl_energy(29, 29, 1.0) == pytest.approx(135.0308, abs=1e-3)
    rep = ZBLRepulsion([29, 79])
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [1.0, 0, 0]])
    out = rep.predict(build_graph(dimer, 3.0, {29: 0, 79: 1}))
    assert float(out.energy[0, 0]) == pytest.approx(135.0308, abs=1e-3)
    # F = -dE/dr along the bond, equal and opposite
    assert out.forces[0, 0, 0] < 0 and torch.allclose(out.forces[0, 0], -out.forces[0, 1])
    cuau = Atoms("CuAu", positions=[[0, 0, 0], [1.1, 0, 0]])
    e = float(rep.predict(build_graph(cuau, 3.0, {29: 0, 79: 1})).energy[0, 0])
    assert e == pytest.approx(zbl_energy(29, 79, 1.1), rel=1e-12)
    assert rep.radii(29, 29) == pytest.approx((1.32, 1.98))  # ASE covalent radius 1.32 Å


def test_switch_is_c2_and_the_pair_energy_falls_monotonically() -> None:
    """C2 at both radii: the switched energy departs from plain ZBL at r_in, and vanishes at
    r_out, as delta^3 (value, first and second derivative continuous): doubling delta
    multiplies the departure by 8, that of dE/dr by 4."""
    rep = ZBLRepulsion([29], pairs={"Cu-Cu": (1.2, 2.0)})
    plain = ZBLRepulsion([29], pairs={"Cu-Cu": (3.0, 4.0)})  # S = 1 below 3 Å
    zero = torch.zeros(1, dtype=torch.long)

    def e_de(model: ZBLRepulsion, r: float) -> tuple[float, float]:
        e, de = model.pair_energy(torch.tensor([r], dtype=torch.float64), zero, zero)
        return float(e[0]), float(de[0])

    def departure(r: float) -> np.ndarray:  # switched minus plain ZBL
        return np.subtract(e_de(rep, r), e_de(plain, r))

    d1, d2 = departure(1.2 + 1e-3), departure(1.2 + 2e-3)
    assert d2[0] / d1[0] == pytest.approx(8, rel=0.02) and d2[1] / d1[1] == pytest.approx(
        4, rel=0.02
    )
    assert np.allclose(departure(1.2 - 1e-3), 0.0, atol=1e-12)
    o1, o2 = np.array(e_de(rep, 2.0 - 1e-3)), np.array(e_de(rep, 2.0 - 2e-3))
    assert o2[0] / o1[0] == pytest.approx(8, rel=0.02) and o2[1] / o1[1] == pytest.approx(
        4, rel=0.02
    )
    assert abs(o1[0]) < 1e-6 and abs(o1[1]) < 1e-3
    assert e_de(rep, 1.1)[0] == pytest.approx(zbl_energy(29, 29, 1.1), rel=1e-12)  # S = 1
    assert e_de(rep, 2.0 + 1e-9) == (0.0, 0.0)
    r = np.arange(0.3, 2.05, 0.005)
    e, de = rep.pair_energy(torch.tensor(r), torch.zeros(len(r), dtype=torch.long), 0 * zero)
    assert (np.diff(e.numpy()) <= 0).all() and (de.numpy() <= 0).all()
    # dE/dr is the derivative of E
    fd = np.gradient(e.numpy(), r)[1:-1]
    assert np.allclose(de.numpy()[1:-1], fd, rtol=2e-2, atol=1e-2)


def test_forces_and_stress_are_derivatives_inside_the_switching_region() -> None:
    """Repulsion alone, float64, three atoms within 1.32-1.98 Å of a neighbour: central
    differences of E against F and against the stress (a finite strain)."""
    at = alloy()
    at = pushed(pushed(at, 0, 4, 1.5), 5, 9, 1.7)
    rep = ZBLRepulsion([29, 79])
    idx = {29: 0, 79: 1}
    out = rep.predict(build_graph(at, 3.0, idx), compute_stress=True)
    assert float(out.energy[0, 0]) > 1.0, "some pairs inside the switching region"

    def energy(a: Atoms) -> float:
        return float(rep.predict(build_graph(a, 3.0, idx), compute_forces=False).energy[0, 0])

    h = 1e-5
    for i in (0, 4, 5, 9):
        for d in range(3):
            p, m = at.copy(), at.copy()
            p.positions[i, d] += h
            m.positions[i, d] -= h
            fd = -(energy(p) - energy(m)) / (2 * h)
            assert float(out.forces[0, i, d]) == pytest.approx(fd, abs=1e-6, rel=1e-6)
    for a, b in [(0, 0), (1, 2), (0, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h
        p, m = at.copy(), at.copy()
        p.set_cell(at.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        m.set_cell(at.cell.array @ (np.eye(3) - eps), scale_atoms=True)
        fd = (energy(p) - energy(m)) / (2 * h) / at.get_volume() / (1 if a == b else 2)
        assert float(out.stress[0, 0, a, b]) == pytest.approx(fd, abs=1e-8, rel=1e-6)


def test_wrapped_committee_passes_the_committee_contract() -> None:
    """Learned (float32 or float64) + baseline: the full contract, close pairs included."""
    native = CommitteePotential(
        ModelConfig(species=[29, 79], n_members=3, channels=8, energy_scale=0.5, seeds=[1, 2, 3])
    ).double()
    wrapped = WithRepulsion(native, ZBLRepulsion([29, 79], cutoff=native.cutoff))
    check_committee_model(wrapped, pushed(alloy(), 0, 4, 1.6))
    assert wrapped.select_members([2]).n_members == 1
    f32 = WithRepulsion(native.float(), ZBLRepulsion([29, 79]))
    assert f32.dtype == torch.float32 and f32.repulsion.r_out.dtype == torch.float64
    g = build_graph(pushed(alloy(), 0, 4, 1.6), 5.0, f32.species_index, dtype=torch.float32)
    out = f32.predict(g, compute_stress=True)
    assert out.forces.dtype == torch.float32 and out.energy.dtype == torch.float64


def test_bad_radii_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"Cu-Au: outer radius 6 Å exceeds the model cutoff 5"):
        ZBLRepulsion([29, 79], pairs={"Au-Cu": (1.0, 6.0)}, cutoff=5.0)
    with pytest.raises(ValueError, match=r"inner radius 2\.0 Å must be below outer 1\.5"):
        ZBLRepulsion([29], pairs={"Cu-Cu": (2.0, 1.5)})
    with pytest.raises(ValueError, match="radii must be positive"):
        ZBLRepulsion([29], pairs={"Cu-Cu": (-1.0, 1.5)})
    with pytest.raises(ValueError, match="unknown element 'Qq'"):
        ZBLRepulsion([29], pairs={"Qq-Cu": (1.0, 1.5)})
    with pytest.raises(ValueError, match="exceeds the model cutoff"):
        WithRepulsion(
            CommitteePotential(ModelConfig(species=[29], n_members=2, cutoff=1.9)),
            ZBLRepulsion([29]),
        )


# ----------------------------------------------------------------- a trained committee
def test_energy_rises_monotonically_as_two_atoms_approach(trained) -> None:
    """An atom pushed toward its neighbour in fcc Cu (2.2 -> 0.5 Å) and a Cu dimer
    (2.0 -> 0.5 Å), every 0.01 Å: every member's energy rises. The learned part alone does
    not (its members' dimer energies fall in places, by 0.34 eV from 0.9 to 0.8 Å for one). The dimer starts at
    2.0 Å: above the outer radius (1.98 Å) the learned part is all there is, and the oracle's
    own dimer curve is nearly flat there (EMT: +0.035 eV from 2.2 to 2.1 Å; real Cu2 has its
    minimum at 2.22 Å): one member trained on bulk cells only dips by 0.06 eV at 2.07-2.2 Å."""
    fcc = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    cases = {
        "fcc": [pushed(fcc, 0, 1, x) for x in np.round(np.arange(2.2, 0.495, -0.01), 3)],
        "dimer": [
            Atoms("Cu2", positions=[[0, 0, 0], [x, 0, 0]])
            for x in np.round(np.arange(2.0, 0.495, -0.01), 3)
        ],
    }
    for name, frames in cases.items():
        rises = np.diff(_energies(trained, frames), axis=1)  # (K, steps)
        assert (rises > 0).all(), f"{name}: energy falls by {-rises.min():.3g} eV on approach"
    learned = np.diff(_energies(unwrap(trained)[0], cases["dimer"]), axis=1)
    assert (learned < 0).any(), "the learned part alone is not monotonic (why the baseline)"


def test_pushing_an_atom_to_1_4_A_costs_at_least_70_percent_of_the_oracle(trained) -> None:
    """108-atom fcc Cu, one atom pushed to 1.4 Å from its neighbour: EMT 17.34 eV; the
    baseline alone gives 30.47 eV (one pair, S = 0.985); each member >= 70 % of EMT."""
    emt, members = _push_energy(trained)
    assert emt == pytest.approx(17.34, abs=0.01)
    moved = pushed(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3), 0, 1, 1.4)
    base = trained.repulsion.predict(build_graph(moved, 4.5, trained.species_index))
    assert float(base.energy[0, 0]) == pytest.approx(30.47, abs=0.01)
    assert (members >= 0.7 * emt).all(), f"members {members} vs EMT {emt:.2f} eV"


@pytest.mark.slow
def test_baseline_against_none_at_1_4_A() -> None:
    """Benchmark-ish: the same training with and without the baseline (measured: EMT
    17.34 eV; without 1.2-4.3 eV, 7-25 %; with 31.7-34.0 eV, 183-196 %)."""
    emt, bare = _push_energy(_train(None).model)
    _, wrapped = _push_energy(_train(ZBLRepulsion([29], cutoff=4.5)).model)
    print(f"EMT {emt:.2f} eV; without baseline {bare}; with {wrapped}")
    assert (wrapped >= 0.7 * emt).all() and (bare < 0.5 * emt).all()


# ----------------------------------------------------------- residual training, checkpoints
def test_validation_errors_of_the_total_equal_those_of_the_learned_part_on_the_residual(
    trained,
) -> None:
    val = [pushed(a, 0, 1, 1.8) for a in _labelled(3, seed=100)]  # pairs in the switch
    for a in val:  # oracle labels of the pushed cells
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.info["REF_stress"] = a.get_stress()
        a.calc = None
    before = [a.info["REF_energy"] for a in val]
    residual = residual_labels(val, trained.repulsion)
    assert [a.info["REF_energy"] for a in val] == before, "inputs unchanged"
    assert residual[0].info["REF_energy"] < before[0] - 0.5, "the baseline acts on these"
    # float64: equal to rounding; the trained float32 model: to float32 precision
    for model, rel in ((copy.deepcopy(trained).double(), 1e-9), (trained, 1e-5)):
        total = evaluate_errors(model, val)
        learned = evaluate_errors(model.learned, residual)
        assert set(total) == set(learned)
        for key, value in total.items():
            assert value == pytest.approx(learned[key], rel=rel, abs=1e-12), key


def test_checkpoint_round_trip_keeps_the_baseline_and_old_files_load_bare(trained, tmp_path):
    frames = [pushed(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), 0, 1, 1.5)]
    sha = save_committee(trained, tmp_path / "a.pt", {"iteration": 1})
    assert save_committee(trained, tmp_path / "b.pt", {"iteration": 1}) == sha, "deterministic"
    loaded, meta = load_committee(tmp_path / "a.pt", expected_sha256=sha)
    assert isinstance(loaded, WithRepulsion) and meta["repulsion"]["pairs"] == {
        "Cu-Cu": [1.32, 1.98]
    }
    assert np.array_equal(_energies(loaded, frames), _energies(trained, frames))
    assert torch.load(tmp_path / "a.pt", weights_only=True)["version"] == 2
    # a bare model (a checkpoint written before the baseline: version 1, no entry) loads bare
    bare_sha = save_committee(trained.learned, tmp_path / "old.pt")
    raw = torch.load(tmp_path / "old.pt", weights_only=True)
    assert raw["version"] == 1 and "repulsion" not in raw
    old, meta = load_committee(tmp_path / "old.pt", expected_sha256=bare_sha)
    assert isinstance(old, CommitteePotential) and meta["repulsion"] is None
    assert np.array_equal(_energies(old, frames), _energies(trained.learned, frames))
    # the calculator of a loaded wrapped committee sees the baseline
    at = frames[0].copy()
    at.calc = CommitteeCalculator(loaded)
    at_bare = frames[0].copy()
    at_bare.calc = CommitteeCalculator(old)
    assert at.get_potential_energy() - at_bare.get_potential_energy() == pytest.approx(
        float(zbl_energy(29, 29, 1.5) * _switch(1.5, 1.32, 1.98)), rel=1e-6
    )


def _switch(r: float, r_in: float, r_out: float) -> float:
    t = min(max((r - r_in) / (r_out - r_in), 0.0), 1.0)
    return 1 - 10 * t**3 + 15 * t**4 - 6 * t**5


def test_repulsion_to_dict_round_trip_and_species_order() -> None:
    rep = ZBLRepulsion([79, 29], pairs={"Cu-Au": (1.3, 2.0)}, outer_scale=0.7)
    again = ZBLRepulsion.from_dict(rep.to_dict())
    assert again.to_dict() == rep.to_dict() and torch.equal(again.r_out, rep.r_out)
    swapped = rep.for_species([29, 79])
    assert swapped.radii(79, 29) == (1.3, 2.0) and swapped.species == [29, 79]
    assert math.isclose(swapped.r_out[0, 0].item(), 0.7 * 2.64)
    with pytest.raises(ValueError, match="unknown repulsion kind"):
        ZBLRepulsion.from_dict({"kind": "lj", "species": [29]})
