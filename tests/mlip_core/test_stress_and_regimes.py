"""The stress term of the loss on mixed batches, and validation errors per regime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT

from mlip_core.labelled import (
    REF_STRESS,
    LabelledData,
    attach_labels,
    error_metrics,
    errors_by_regime,
    evaluate_errors,
    predict_frames,
    weighted_losses,
)
from mlip_core.model import CommitteePotential, ModelConfig
from mlip_core.training import TrainingConfig


def _emt(atoms: Atoms) -> Atoms:
    a = atoms.copy()
    a.calc = EMT()
    stress = a.get_stress() if a.pbc.all() else None  # what the EMT labeler stores
    return attach_labels(a, a.get_potential_energy(), a.get_forces(), stress)


@pytest.fixture(scope="module")
def cu_model() -> CommitteePotential:
    torch.manual_seed(0)
    cfg = ModelConfig(species=[29], n_members=2, channels=8, avg_neighbors=12.0, seeds=[1, 2])
    return CommitteePotential(cfg).double().eval()


@pytest.fixture(scope="module")
def mixed() -> list[Atoms]:
    """A stress-labelled bulk cell, a slab (periodic in-plane, no stress label) and a cluster."""
    rng = np.random.default_rng(0)
    cell = bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 2, 2))
    cell.positions += rng.normal(0, 0.05, cell.positions.shape)
    slab = fcc111("Cu", (2, 2, 3), a=3.61, vacuum=5.0)
    cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]])
    return [_emt(cell), _emt(slab), _emt(cluster)]


def _loss(model, data, idx, weight):
    cfg = TrainingConfig(stress_weight=weight, energy_weight=1.0)
    b = data.batch(idx, torch.ones(model.n_members, len(idx), dtype=torch.float64))
    return weighted_losses(model, b, cfg, create_graph=False).detach()


def test_mixed_batch_uses_stress_only_where_labelled(cu_model, mixed):
    assert REF_STRESS in mixed[0].info and all(REF_STRESS not in a.info for a in mixed[1:])
    data = LabelledData(mixed, cu_model, torch.float64)
    assert [data.has_stress(i) for i in range(3)] == [True, False, False]
    b = data.batch([0, 1, 2], torch.ones(2, 3))
    assert b.stress_mask.tolist() == [True, False, False]
    # the batch loss is the mean of the single-structure losses (equal weights) ...
    together = _loss(cu_model, data, [0, 1, 2], 10.0)
    alone = torch.stack([_loss(cu_model, data, [i], 10.0) for i in range(3)]).mean(0)
    torch.testing.assert_close(together, alone)
    # ... the stress term counts for the labelled cell, and only there
    assert not torch.allclose(_loss(cu_model, data, [0], 10.0), _loss(cu_model, data, [0], 0.0))
    for i in (1, 2):
        torch.testing.assert_close(_loss(cu_model, data, [i], 10.0), _loss(cu_model, data, [i], 0))
    # and it has a gradient through the mixed batch (a molecule does not break the virial)
    cfg = TrainingConfig(stress_weight=10.0)
    weighted_losses(cu_model, b, cfg, create_graph=True).sum().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in cu_model.parameters())
    cu_model.zero_grad(set_to_none=True)


def test_emt_stress_label_is_the_strain_derivative(mixed):
    """REF_stress follows ASE: sigma = (1/V) dE/d(strain) (positive under tension), the
    convention of the model's own stress (test_model_physics)."""
    a = mixed[0].copy()
    eps, e = 1e-4, []
    for sign in (-1, 1):
        b = a.copy()
        b.set_cell(a.cell.array * (1 + sign * eps), scale_atoms=True)
        b.calc = EMT()
        e.append(b.get_potential_energy())
    trace = (e[1] - e[0]) / (2 * eps) / a.get_volume()  # d E / d(isotropic strain) / V
    assert np.sum(a.info[REF_STRESS][:3]) == pytest.approx(trace, rel=1e-3)


def test_errors_per_regime_and_stress_where_labelled(cu_model, mixed):
    pred = predict_frames(cu_model, mixed)
    assert np.isfinite(pred.stress_ref[0]).all() and np.isnan(pred.stress_ref[1:]).all()
    regimes = ["bulk", "surface", "bulk"]
    per = errors_by_regime(pred, regimes)
    assert list(per) == ["bulk", "surface"]
    assert per["bulk"]["n_frames"] == 2 and per["surface"]["n_frames"] == 1
    assert per["bulk"]["n_stress"] == 1 and "stress_rmse_gpa" not in per["surface"]
    # each regime's numbers are those of its frames alone
    alone = error_metrics(predict_frames(cu_model, [mixed[1]]))
    assert per["surface"]["force_rmse"] == pytest.approx(alone["force_rmse"], rel=1e-9)
    df = np.concatenate(
        [(pred.forces_pred[i] - pred.forces_ref[i]).ravel() for i in (0, 2)]
    )  # by hand
    assert per["bulk"]["force_rmse"] == pytest.approx(np.sqrt(np.mean(df**2)))
    assert per["bulk"]["force_max"] == pytest.approx(np.abs(df).max())
    assert per["bulk"]["force_max"] >= per["bulk"]["force_rmse"] >= per["bulk"]["force_mae"]
    # the overall metrics keep their keys and the member errors
    overall = evaluate_errors(cu_model, mixed)
    assert {"force_rmse", "energy_rmse", "member1_force_rmse"} <= set(overall)
    with pytest.raises(ValueError, match="2 regime names for 3 structures"):
        errors_by_regime(pred, ["a", "b"])
