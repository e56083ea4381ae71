"""A species without labelled atoms (issue 14, case 6): Ni4 labelled, Co2Ni2 not (the EMT
labeler has no Co). The committee must not predict Co with a made-up reference energy and a
zero spread: the species is left out (the calculator refuses Co structures, naming Co) and a
warning says so; a composition matrix of low rank is reported."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from mlip_core.calculator import CommitteeCalculator
from mlip_core.labelled import REF_ENERGY, REF_FORCES, fit_reference_energies
from mlip_core.model import ModelConfig
from mlip_core.training import TrainingConfig, train_committee


def _labelled(atoms: Atoms, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    atoms.info[REF_ENERGY] = atoms.get_potential_energy()
    atoms.arrays[REF_FORCES] = atoms.get_forces()
    atoms.calc = None
    return atoms


def test_a_species_without_labels_is_left_out_and_refused(caplog):
    ni4 = bulk("Ni", "fcc", a=3.52, cubic=True)
    data = [_labelled(ni4, s) for s in range(6)]
    cfg = ModelConfig(species=[27, 28], n_members=2, channels=8, n_layers=1)
    with caplog.at_level(logging.WARNING, logger="mlip_core"):
        out = train_committee(data, TrainingConfig(max_epochs=2, seed=0), model_config=cfg)
    assert out.model.species == [28]
    assert any("no labelled atoms of Co" in r.getMessage() for r in caplog.records)
    co2ni2 = ni4.copy()
    co2ni2.numbers[:2] = 27
    co2ni2.calc = CommitteeCalculator(out.model)
    with pytest.raises(ValueError, match=r"element\(s\) Co not among the model's species"):
        co2ni2.get_potential_energy()


def test_reference_energies_report_a_low_rank_composition_matrix(caplog):
    ni4 = bulk("Ni", "fcc", a=3.52, cubic=True)
    nico = ni4.copy()
    nico.numbers[:2] = 27
    one_ratio = []  # Ni:Co = 1:1 in every structure (made-up energies: EMT has no Co)
    for k in range(3):
        frame = nico.copy()
        frame.info[REF_ENERGY] = -20.0 - 0.1 * k
        frame.arrays[REF_FORCES] = np.zeros((len(frame), 3))
        one_ratio.append(frame)
    with caplog.at_level(logging.WARNING, logger="mlip_core"):
        ref = fit_reference_energies(one_ratio, [27, 28])
    assert any("determine 1 of 2" in r.getMessage() for r in caplog.records)
    # the fit still reproduces the energies of the composition it saw
    e = np.array([a.info[REF_ENERGY] for a in one_ratio])
    np.testing.assert_allclose(2 * ref[0] + 2 * ref[1], e.mean(), rtol=1e-12, atol=1e-9)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlip_core"):
        fit_reference_energies([*one_ratio, _labelled(ni4, 9)], [27, 28])
    assert not caplog.records
