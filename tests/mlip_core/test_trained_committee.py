"""Acceptance checks on a committee trained for real on EMT-labelled Cu.

One training run (module fixture) serves all tests here:
- accuracy: validation force RMSE < 20 meV/Å and energy RMSE < 5 meV/atom after a fixed
  number of epochs, one torch thread. The budget is in epochs, not seconds, so the trained
  weights -- and the outcome -- are the same whatever the machine's speed and load; only the
  wall time varies (see README "Committee accuracy");
- NVE with the trained model conserves total energy (drift over 2 ps < 1 meV/atom);
- on hotter MD than the training data, the committee's max force deviation correlates with the
  true max force error (Spearman rho > 0.5), and a calibration fitted on labelled data maps
  deviations to errors (raw deviations underestimate errors).

Behind the ``slow`` marker (``make test-slow``): the training alone takes 100-190 s on a 2-core
machine. The default suite trains for real in ``tests/workflows/test_campaign.py`` (a campaign
that converges and cuts its validation error) and ``test_training.py``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from mlip_core.calculator import CommitteeCalculator
from mlip_core.calibration import fit_calibration
from mlip_core.datasets import emt_md_dataset
from mlip_core.model import ModelConfig
from mlip_core.threads import configure_threads
from mlip_core.training import TrainingConfig, TrainingResult, train_committee
from mlip_core.uncertainty import max_force_deviation, spearman

pytestmark = pytest.mark.slow

# Cosine schedule over this many epochs. Measured (seed 0, 1 thread): 50 epochs -> 19.4 meV/Å,
# 60 -> 17.9, 80 -> 16.2, 100 -> 14.8, 120 -> 13.8 meV/Å; 100 epochs with seeds 1 and 2: 13.6
# meV/Å. 100 epochs keep a 25 % margin and the module at ~3 min (README "Committee accuracy").
TRAIN_EPOCHS = 100


@pytest.fixture(scope="module")
def trained() -> TrainingResult:
    data = emt_md_dataset(100, steps_between=10, seed=0)
    previous = configure_threads(1)  # the weights are reproducible at a fixed thread count
    try:
        t0 = time.perf_counter()
        res = train_committee(
            data,
            TrainingConfig(max_epochs=TRAIN_EPOCHS, seed=0),
            model_config=ModelConfig(species=[29], n_members=4),
        )
        res.metrics["measured_wall_s"] = time.perf_counter() - t0
    finally:
        configure_threads(previous)
    return res


def test_training_reaches_force_rmse_below_20_meV_per_A(trained):
    m = trained.metrics
    print(
        f"\nvalidation force RMSE {m['force_rmse'] * 1e3:.1f} meV/Å, MAE {m['force_mae'] * 1e3:.1f} meV/Å,"
        f" energy RMSE {m['energy_rmse'] * 1e3:.3f} meV/atom after {trained.epochs} epochs"
        f" (best {m['best_epoch']:.0f}), {m['measured_wall_s']:.0f} s at load average"
        f" {os.getloadavg()[0]:.2f} ({trained.stop_reason})"
    )
    # a budget in epochs: nothing here depends on the clock
    assert not trained.time_capped
    assert trained.epochs == len(trained.history) <= TRAIN_EPOCHS
    assert m["force_rmse"] < 0.020
    assert m["energy_rmse"] < 0.005
    # the committee mean is at least as good as a typical member
    members = [m[f"member{k}_force_rmse"] for k in range(4)]
    assert m["force_rmse"] <= np.median(members) + 1e-4
    assert len(trained.val_indices) == 10 and not set(trained.val_indices) & set(
        trained.train_indices
    )


def test_nve_conserves_energy_with_trained_model(trained):
    model = trained.model.select_members([0, 1, 2, 3]).double()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.calc = CommitteeCalculator(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1200, rng=np.random.default_rng(3))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    n = len(atoms)
    totals = []

    def record() -> None:
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())

    dyn.attach(record, interval=10)
    dyn.run(1000)  # 2 ps
    totals_mev = (np.array(totals) - totals[0]) / n * 1e3
    drift = np.polyfit(np.arange(len(totals_mev)) * 20.0 / 1000.0, totals_mev, 1)[0] * 2.0
    print(
        f"\nNVE 2 ps, 108 Cu from 1200 K: drift {drift:+.3f} meV/atom per 2 ps,"
        f" std {totals_mev.std():.3f} meV/atom, max |dE| {np.abs(totals_mev).max():.3f} meV/atom"
    )
    assert abs(drift) < 1.0
    assert np.abs(totals_mev).max() < 2.0
    # it is real dynamics: kinetic energy changed a lot while the total stayed put
    assert atoms.get_temperature() < 1000


def test_uncertainty_correlates_with_true_error_on_hotter_md(trained):
    calc = CommitteeCalculator(trained.model)
    rng = np.random.default_rng(11)
    devs, errs = [], []
    for temp in (1500.0, 1800.0, 2100.0):
        atoms = bulk("Cu", "fcc", a=3.61 * 1.01, cubic=True).repeat(3)
        atoms.calc = EMT()
        MaxwellBoltzmannDistribution(atoms, temperature_K=temp, rng=rng)
        dyn = Langevin(atoms, 4 * units.fs, temperature_K=temp, friction=0.02, rng=rng, fixcm=False)
        for _ in range(12):
            dyn.run(10)
            ref = atoms.get_forces()
            probe = atoms.copy()
            probe.calc = calc
            pred = probe.get_forces()
            members = calc.get_property("forces_committee", probe)
            devs.append(max_force_deviation(members))
            errs.append(float(np.linalg.norm(pred - ref, axis=1).max()))
    devs_a, errs_a = np.array(devs), np.array(errs)
    rho = spearman(devs_a, errs_a)
    cal = fit_calibration(devs_a[::2], errs_a[::2], method="scale")
    held_out = cal(devs_a[1::2])
    ratio = float(np.median(errs_a / devs_a))
    print(
        f"\nSpearman rho(max force deviation, max force error) = {rho:.3f} on {len(devs)} frames"
        f" at 1500-2100 K; median error/deviation = {ratio:.2f}; calibration scale {cal.scale:.2f}"
    )
    assert rho > 0.5
    assert ratio > 1.0  # raw deviations underestimate errors
    # calibrated deviations are closer to the held-out errors than raw ones
    raw_gap = np.median(np.abs(np.log(devs_a[1::2] / errs_a[1::2])))
    cal_gap = np.median(np.abs(np.log(np.asarray(held_out) / errs_a[1::2])))
    assert cal_gap < raw_gap


def test_fine_tune_from_previous_committee(trained):
    new = emt_md_dataset(8, temperatures=(1500.0,), volume_scales=(1.0,), steps_between=10, seed=5)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    res = train_committee(
        new, TrainingConfig(max_epochs=3, seed=1, val_fraction=0.25), model=trained.model
    )
    # warm start copies: the previous committee is untouched, the new one moved from it
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, before[k])
    diffs = [
        (res.model.state_dict()[k].double() - before[k].double()).abs().max().item()
        for k in before
        if before[k].is_floating_point()
    ]
    assert max(diffs) > 0
    assert res.model.config.species == trained.model.config.species
