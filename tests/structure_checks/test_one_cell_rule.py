"""One cell rule everywhere (issue 14, case 2): ASE's standard slab, ``fcc111`` with
``pbc=(True, True, False)`` and a zero third cell vector, is valid for the committee calculator,
a walker, training, the labelers' pre-flight, the store and config validation; its energy and
forces equal those of the same slab in a vacuum-padded cell. Zero or dependent *periodic*
vectors are refused by each of them with the same message."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import fcc111
from ase.calculators.emt import EMT

from structure_checks import cell_problem, neighbor_box

DEGENERATE = "periodic vectors (axes"


def _slab():
    slab = fcc111("Cu", (2, 2, 3))
    slab.pbc = (True, True, False)
    assert np.allclose(slab.cell[2], 0)
    return slab


def _padded(slab):
    padded = slab.copy()
    padded.cell[2] = [0, 0, 30.0]
    padded.center(axis=2)
    return padded


def _bad():
    flat = _slab()
    flat.pbc = True  # the zero vector is now periodic
    return flat


def test_the_rule_and_the_neighbor_box():
    slab = _slab()
    assert cell_problem(slab.cell.array, slab.pbc) is None
    assert DEGENERATE in cell_problem(slab.cell.array, [True] * 3)
    tilted = np.array([[3.0, 0, 0], [1.0, 2.0, 0], [0, 0, 0]])
    box = neighbor_box(tilted, [True, True, False])
    assert np.allclose(box[:2], tilted[:2]) and np.allclose(box[2], [0, 0, 1])
    dependent = np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 5.0]])
    assert DEGENERATE in cell_problem(dependent, [True, True, False])
    assert cell_problem(np.zeros((3, 3)), [False] * 3) is None  # a molecule


def test_committee_energy_and_forces_equal_the_vacuum_padded_slab(model64_cu):
    from mlip_core.calculator import CommitteeCalculator

    results = []
    for atoms in (_slab(), _padded(_slab())):
        atoms.calc = CommitteeCalculator(model64_cu)
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        results.append((e, f))  # the padded copy is only shifted along z
    (e0, f0), (e1, f1) = results
    assert abs(e0 - e1) < 1e-10
    np.testing.assert_allclose(f0, f1, atol=1e-10)
    with pytest.raises(ValueError, match=r"periodic vectors \(axes"):
        atoms = _bad()
        atoms.calc = CommitteeCalculator(model64_cu)
        atoms.get_potential_energy()


def test_a_walker_and_training_take_the_slab(model64_cu):
    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.labelled import REF_ENERGY, REF_FORCES
    from mlip_core.md import WalkerSpec, run_walker
    from mlip_core.monitor import Trust
    from mlip_core.training import TrainingConfig, train_committee

    res = run_walker(
        _slab(),
        CommitteeCalculator(model64_cu),
        WalkerSpec(
            temperature_K=300, n_steps=6, record_every=2, seed=1, trust=Trust(lo=10.0, hi=20.0)
        ),
    )
    assert not res.stopped_early, res.stop_reason
    assert len(res.frames) == 4
    labelled = []
    for frame in [_slab(), *res.frames[1:]]:
        frame = frame.copy()
        frame.calc = EMT()
        frame.info[REF_ENERGY] = frame.get_potential_energy()
        frame.arrays[REF_FORCES] = frame.get_forces()
        frame.calc = None
        labelled.append(frame)
    out = train_committee(labelled, TrainingConfig(max_epochs=2, seed=0), n_members=2)
    assert np.isfinite(out.metrics["force_rmse"])


def test_labeler_preflight_store_and_config_agree():
    from database import DatabaseInputError
    from database.validation import check_atoms
    from dft_adapters.preflight import check_geometry as preflight
    from workflows.structure_text import check_geometry as config_check

    slab = _slab()
    assert preflight(slab) is None
    check_atoms(slab)
    config_check(slab, "slab")
    bad = _bad()
    assert DEGENERATE in preflight(bad)
    with pytest.raises(DatabaseInputError, match=r"periodic vectors \(axes"):
        check_atoms(bad)
    with pytest.raises(ValueError, match=r"periodic vectors \(axes"):
        config_check(bad, "slab")
