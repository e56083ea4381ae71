"""The standalone (TorchScript) committee and its single-file calculator equal pesflow's
CommitteeCalculator: 1e-10 relative in float64, 1e-5 in float32, on a periodic bulk, a slab
(mixed pbc, zero third cell vector or vacuum) and a cluster without a cell, with one or two
message-passing layers, with and without the ZBL baseline."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlip_core import standalone_calculator
from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteePotential, ModelConfig
from mlip_core.neighbors import build_graph
from mlip_core.repulsion import WithRepulsion, ZBLRepulsion
from mlip_core.standalone import METADATA_FILE, save_scripted, script_committee
from mlip_core.standalone_calculator import PesflowCalculator
from mlip_core.standalone_check import compare_calculators, probe_structures
from mlip_core.uncertainty import atomic_force_deviation, max_force_deviation

from .conftest import random_structure

SYMBOLS = ["Cu"] * 6 + ["O"] * 3 + ["H"] * 2
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _model(n_layers: int, repulsion: bool) -> torch.nn.Module:
    cfg = ModelConfig(
        species=[1, 8, 29],
        n_members=3,
        channels=16,
        n_layers=n_layers,
        avg_neighbors=20.0,
        energy_scale=0.7,
        seeds=[21, 22, 23],
    )
    m = CommitteePotential(cfg).double()
    m.reference_energies.copy_(torch.tensor([-1.1, -4.3, -3.5], dtype=torch.float64))
    frames = [random_structure(SYMBOLS, seed=s) for s in range(3)]
    m.fit_feature_statistics([build_graph(a, m.cutoff, m.species_index) for a in frames])
    if not repulsion:
        return m.eval()
    # radii wide enough that the random structures' pairs (>= 1.6 Å) feel the baseline
    rep = ZBLRepulsion(m.species, inner_scale=1.0, outer_scale=1.6, cutoff=m.cutoff)
    return WithRepulsion(m, rep).eval()


MODELS = {"1 layer": (1, False), "2 layers + ZBL": (2, True)}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request) -> torch.nn.Module:
    return _model(*MODELS[request.param])


def _structures() -> list:
    bulk = random_structure(SYMBOLS, seed=7)
    flat = bulk.copy()  # slab as ASE builds them: zero third vector, not periodic along it
    flat.pbc = [True, True, False]
    flat.cell[2] = 0.0
    cluster = random_structure(SYMBOLS[:8], seed=8, cell=5.0, pbc=False)
    cluster.cell = np.zeros((3, 3))
    return [*probe_structures(bulk), flat, cluster]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_exported_calculator_equals_pesflow(model, dtype, tmp_path: Path):
    path = tmp_path / "committee.pt"
    save_scripted(script_committee(model, dtype), path)
    reference = CommitteeCalculator(copy.deepcopy(model).to(dtype))
    exported = PesflowCalculator(path)
    structures = _structures()
    if isinstance(model, WithRepulsion):  # the baseline acts on these structures
        graph = build_graph(structures[0], model.cutoff, model.species_index)
        assert float(model.repulsion.predict(graph).energy) > 0.1
    worst = compare_calculators(reference, exported, structures)
    assert set(worst) >= {"energy", "forces", "stress", "forces_std", "max_force_dev"}
    assert max(worst.values()) <= TOL[dtype], worst
    # deviations also against their own scale (these structures: spread ~ forces)
    plain = compare_calculators(reference, exported, structures[:1], force_scaled=())
    assert max(plain.values()) <= 10 * TOL[dtype], plain


def test_deviation_is_pesflows_max_devi_f_and_all_results_are_there(model, tmp_path: Path):
    path = tmp_path / "committee.pt"
    save_scripted(script_committee(model), path)
    calc = PesflowCalculator(path)
    atoms = random_structure(SYMBOLS, seed=9)
    atoms.calc = calc
    atoms.get_potential_energy()
    res = calc.results
    ref = CommitteeCalculator(model)
    ref.calculate(atoms.copy(), ["energy"])
    assert set(ref.results) <= set(res)  # every name of pesflow's calculator
    assert res["max_devi_f"] == res["max_force_dev"]
    np.testing.assert_allclose(res["forces_std"], atomic_force_deviation(res["forces_committee"]))
    assert res["max_force_dev"] == pytest.approx(max_force_deviation(res["forces_committee"]))
    assert res["stress"].shape == (6,) and res["stress_committee"].shape == (3, 6)
    np.testing.assert_allclose(atoms.get_stress(), res["stress"])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_scripted_module_runs_under_no_grad_and_carries_metadata(tmp_path: Path):
    from ase.neighborlist import neighbor_list

    model = _model(1, True)
    path = tmp_path / "c.pt"
    sha = save_scripted(script_committee(model), path, {"provenance": {"campaign": "x"}})
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    assert meta["species"] == [1, 8, 29] and meta["n_members"] == 3 and meta["has_repulsion"]
    assert meta["provenance"] == {"campaign": "x"} and len(sha) == 64
    assert loaded.cutoff == 5.0 and list(loaded.species) == [1, 8, 29]
    atoms = random_structure(SYMBOLS, seed=3)
    i, j, s = neighbor_list("ijS", atoms, loaded.cutoff)
    args = (
        torch.tensor(atoms.positions),
        torch.tensor(atoms.cell.array),
        torch.tensor(atoms.numbers),
        torch.tensor(np.stack([i, j])),
        torch.tensor(s),
    )
    with torch.no_grad():
        out = loaded(*args, False)
    assert torch.is_grad_enabled() and "stress" not in out
    assert out["forces"].shape == (len(atoms), 3) and out["energy_committee"].shape == (3,)
    assert out["forces"].dtype == torch.float64 and not out["forces"].requires_grad


def test_exported_calculator_refuses_what_pesflow_refuses(tmp_path: Path):
    path = tmp_path / "c.pt"
    save_scripted(script_committee(_model(1, False)), path)
    calc = PesflowCalculator(path)
    bad = random_structure(["Cu", "Au"], seed=1)
    with pytest.raises(ValueError, match="Au not among the model's species"):
        calc.calculate(bad, ["energy"])
    close = random_structure(["Cu", "Cu"], seed=1)
    close.positions[1] = close.positions[0] + [0.3, 0, 0]
    with pytest.raises(ValueError, match="too close"):
        calc.calculate(close, ["energy"])
    with pytest.raises(FileNotFoundError):
        PesflowCalculator(tmp_path / "missing.pt")


def test_one_member_committee_has_zero_deviation(tmp_path: Path):
    model = _model(1, False).select_members([1])
    path = tmp_path / "c.pt"
    save_scripted(script_committee(model), path)
    atoms = random_structure(SYMBOLS, seed=4)
    worst = compare_calculators(CommitteeCalculator(model), PesflowCalculator(path), [atoms])
    assert max(worst.values()) <= 1e-10
    assert PesflowCalculator(path).get_property("max_force_dev", atoms) == 0.0


def test_calculator_file_imports_only_torch_ase_numpy_and_stdlib():
    """The shipped file must not need pesflow (the fresh-environment test runs it); vesin is
    optional (imported inside ``try``)."""
    import sys

    tree = ast.parse(Path(standalone_calculator.__file__).read_text())
    guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for n in ast.walk(t)}
    roots, optional = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            names = {str(node.module).split(".")[0]}
        else:
            continue
        (optional if id(node) in guarded else roots).update(names)
    assert roots - set(sys.stdlib_module_names) == {"torch", "ase", "numpy"}
    assert optional == {"vesin"}


@pytest.mark.parametrize("backend", ["ase", "vesin"])
def test_both_neighbor_lists_give_pesflows_results(backend, tmp_path: Path):
    model = _model(2, True)
    path = tmp_path / "c.pt"
    save_scripted(script_committee(model), path)
    exported = PesflowCalculator(path, neighbors=backend)
    worst = compare_calculators(CommitteeCalculator(model), exported, _structures())
    assert max(worst.values()) <= 1e-10, worst
    with pytest.raises(ValueError, match="unknown neighbor-list backend"):
        PesflowCalculator(path, neighbors="matscipy")


def test_script_refuses_other_backends():
    from mlip_core.committee import LoopCommittee

    with pytest.raises(TypeError, match="only the native committee"):
        script_committee(LoopCommittee([_model(1, False)]))
