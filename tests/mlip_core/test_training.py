"""Training mechanics on tiny data: determinism, time cap, loss terms, reference energies,
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from mlip_core.datasets import label_with
from mlip_core.model import ModelConfig
from mlip_core.threads import configure_threads
from mlip_core.training import (
    TrainingConfig,
    attach_labels,
    evaluate_errors,
    fit_reference_energies,
    train_committee,
)


@pytest.fixture(scope="module")
def tiny() -> list:
    frames = []
    for i, a in enumerate((3.55, 3.6, 3.65, 3.7, 3.58, 3.62)):
        at = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
        at.rattle(0.05, seed=i)
        frames.append(at)
    return label_with(frames, EMT)


def small_cfg(**kw) -> ModelConfig:
    return ModelConfig(species=[29], n_members=2, channels=8, **kw)


@pytest.fixture
def one_thread():
    """Determinism holds at a fixed thread count: pin it (and restore the previous one)."""
    previous = configure_threads(1)
    yield
    configure_threads(previous)


def assert_same_weights(a, b) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), k


def test_deterministic_with_a_seed(tiny, one_thread):
    cfg = TrainingConfig(max_epochs=3, seed=7, val_fraction=0.34)
    a = train_committee(tiny, cfg, model_config=small_cfg())
    b = train_committee(tiny, cfg, model_config=small_cfg())
    assert_same_weights(a, b)

    def losses(res):
        return [(r["train_loss"], r.get("val_loss"), r["lr"]) for r in res.history]

    assert a.val_indices == b.val_indices and losses(a) == losses(b)
    c = train_committee(
        tiny, TrainingConfig(max_epochs=3, seed=8, val_fraction=0.34), model_config=small_cfg()
    )
    assert not torch.equal(c.model.readout.l1.weight, a.model.readout.l1.weight)


def test_a_time_cap_that_does_not_bind_changes_nothing(tiny, one_thread):
    """The schedule is defined in epochs: a slow clock (or a generous cap) cannot move it."""
    kw = dict(max_epochs=3, seed=7, val_fraction=0.34)
    free = train_committee(tiny, TrainingConfig(**kw), model_config=small_cfg())
    capped = train_committee(tiny, TrainingConfig(max_time_s=1e6, **kw), model_config=small_cfg())
    assert_same_weights(free, capped)
    assert [r["lr"] for r in free.history] == [r["lr"] for r in capped.history]
    for res in (free, capped):
        assert res.epochs == 3 and not res.time_capped
        assert res.stop_reason == "reached max_epochs=3"


def test_a_binding_time_cap_stops_at_an_epoch_boundary(tiny, one_thread):
    kw = dict(max_epochs=5, seed=7, val_fraction=0.34)
    res = train_committee(tiny, TrainingConfig(max_time_s=1e-9, **kw), model_config=small_cfg())
    # the cap is checked after a whole epoch (training + validation), never inside one
    assert res.time_capped and res.epochs == 1 and len(res.history) == 1
    assert res.history[0]["epoch"] == 1.0 and "val_loss" in res.history[0]
    assert res.stop_reason == "time budget of 1e-09 s used after 1 of 5 epochs"
    assert np.isfinite(res.metrics["force_rmse"])
    # the epoch it ran is the first epoch of the uncapped run, learning rates included
    full = train_committee(tiny, TrainingConfig(**kw), model_config=small_cfg())
    assert res.history[0]["train_loss"] == full.history[0]["train_loss"]
    assert res.history[0]["lr"] == full.history[0]["lr"]
    # at the last epoch the run is complete, not capped
    last = train_committee(
        tiny, TrainingConfig(max_epochs=1, max_time_s=1e-9, seed=7), model_config=small_cfg()
    )
    assert not last.time_capped and last.stop_reason == "reached max_epochs=1"


def test_training_reduces_force_error_and_uses_stress(tiny):
    base = train_committee(
        tiny, TrainingConfig(max_epochs=1, seed=0, val_fraction=0.0), model_config=small_cfg()
    )
    before = evaluate_errors(base.model, tiny)
    res = train_committee(
        tiny,
        TrainingConfig(
            max_epochs=40, seed=0, val_fraction=0.0, stress_weight=10.0, learning_rate=1e-2
        ),
        model_config=small_cfg(),
    )
    after = evaluate_errors(res.model, tiny)
    assert after["force_rmse"] < 0.5 * before["force_rmse"]
    # stress predictions follow the EMT stress after training with a stress term
    at = tiny[0].copy()
    from mlip_core.calculator import CommitteeCalculator

    at.calc = CommitteeCalculator(res.model)
    ref = tiny[0].info["REF_stress"]
    assert np.abs(at.get_stress() - ref).max() < np.abs(ref).max()


def test_reference_energies_least_squares():
    frames = []
    for n_cu, n_au in ((4, 0), (2, 2), (0, 4), (3, 1)):
        at = bulk("Cu", "fcc", a=3.7, cubic=True)
        at.numbers[:n_au] = 79
        frames.append(attach_labels(at, -3.0 * n_cu - 5.0 * n_au, np.zeros((4, 3))))
    ref = fit_reference_energies(frames, [29, 79])
    np.testing.assert_allclose(ref, [-3.0, -5.0], atol=1e-10)


def test_bad_training_input(tiny):
    no_labels = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(ValueError, match="no reference labels"):
        train_committee([no_labels])
    nan = tiny[0].copy()
    nan.info["REF_energy"] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        train_committee([nan, tiny[1]])
    with pytest.raises(ValueError, match="forces must have shape"):
        attach_labels(tiny[0], 0.0, np.zeros((3, 3)))
    au = label_with([bulk("Au", "fcc", a=4.1)], EMT)
    with pytest.raises(ValueError, match="Au unknown to the previous committee"):
        base = train_committee(tiny, TrainingConfig(max_epochs=1), model_config=small_cfg())
        train_committee(au, TrainingConfig(max_epochs=1), model=base.model)
    with pytest.raises(ValueError, match="schedule"):
        TrainingConfig(schedule="linear")
    with pytest.raises(ValueError, match="val_fraction"):
        TrainingConfig(val_fraction=1.5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_time_s"):
            TrainingConfig(max_time_s=bad)
