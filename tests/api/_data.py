"""Test data for the API tests: a tiny campaign config and real EMT labels."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "structures": [
        {
            "generate": {
                "element": "Cu",
                "lattice_constant": 3.61,
                "repeat": [1, 1, 1],
                "cubic": True,
            }
        }
    ],
    "labeler": {"name": "emt"},
    "bootstrap": {"n_structures": 6, "rattle": 0.05, "strain": 0.02},
    "validation": {"n_structures": 4, "rattle": [0.03, 0.06], "strain": 0.02},
    "model": {"n_members": 2, "channels": 8, "n_layers": 1},
    "training": {"max_epochs": 15, "max_time_s": 8, "warm_start_epochs": 8, "patience": 10},
    "exploration": {
        "walkers": [
            {"temperature": t, "steps": 60, "timestep": 2.0, "record_every": 5} for t in (300, 1200)
        ]
    },
    "trust": {"lo": 0.05, "hi": 0.5},
    "selection": {"max_per_iteration": 4, "strategy": "fps"},
    "convergence": {"accurate_ratio": 0.99, "patience": 1, "max_iterations": 2},
}


def tiny_config(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """TINY with a name and section-level overrides."""
    data = copy.deepcopy(TINY)
    data["name"] = name
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def emt_frames(n: int, seed: int = 0, rattle: float = 0.08):
    """``n`` rattled Cu cells with their EMT energy and forces (real labels)."""
    rng = np.random.default_rng(seed)
    atoms, energies, forces = [], [], []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        a.positions += rng.normal(0, rattle, a.positions.shape)
        a.calc = EMT()
        energies.append(a.get_potential_energy())
        forces.append(a.get_forces())
        a.calc = None
        atoms.append(a)
    return atoms, energies, forces


def runtime(store, campaign_id: int) -> dict[str, Any]:
    """The workflow's runtime block of a campaign (labeler settings hash, initial ids)."""
    return store.get_campaign(campaign_id).config["_runtime"]


def seed_campaign(
    store,
    campaign_id: int,
    *,
    n_done: int = 6,
    n_failed: int = 2,
    n_pending: int = 3,
    n_iterations: int = 2,
    models: bool = False,
) -> dict[str, list[int]]:
    """Fill a campaign with iterations, real EMT labels (done), typed failures and pending
    labels; selections carry uncertainties; with ``models``, each iteration has a model row
    (validation errors, no checkpoint file). Returns the ids by kind."""
    from database import SelectionInput

    h = runtime(store, campaign_id)["settings_hash"]
    its = [store.start_iteration(campaign_id, i) for i in range(n_iterations)]
    atoms, e, f = emt_frames(n_done + n_failed + n_pending, seed=campaign_id)
    done = store.add_labelled(
        campaign_id,
        atoms[:n_done],
        energies=e[:n_done],
        forces=f[:n_done],
        labeler="emt",
        settings_hash=h,
        iteration_id=its[0].id,
        reason="bootstrap",
    )
    rest = store.add_structures(atoms[n_done:], campaign=campaign_id, iteration_id=its[-1].id)
    store.record_selections(
        campaign_id,
        [SelectionInput(s, max_force_dev=0.1 + 0.05 * k) for k, s in enumerate(rest)],
        iteration_id=its[-1].id,
    )
    failed_sids, pending_sids = rest[:n_failed], rest[n_failed:]
    failed = store.request_labels(
        campaign_id, failed_sids, labeler="emt", settings_hash=h, iteration_id=its[-1].id
    )
    kinds = ["scf_unconverged", "timeout"]
    for k, task in enumerate(store.claim_labels(limit=n_failed, campaign=campaign_id)):
        store.store_failure(task.label_id, kind=kinds[k % 2], message="test failure")
    pending = store.request_labels(
        campaign_id, pending_sids, labeler="emt", settings_hash=h, iteration_id=its[-1].id
    )
    from database import WalkerOutcome

    for k, it in enumerate(its):
        if models:
            store.record_model(
                campaign_id,
                iteration_id=it.id,
                member_count=4,
                checkpoint_uri=f"campaigns/test/models/iter-{k:03d}.pt",
                checkpoint_sha256=f"{k:064d}",
                training_label_ids=done,
                validation={"val_force_rmse": 0.1 / (k + 1), "val_energy_rmse": 0.01 / (k + 1)},
            )
        store.record_walker_run(
            it.id,
            WalkerOutcome(walker=0, n_frames=20, max_force_devs=np.linspace(0.01, 0.6, 20)),
        )
        store.update_iteration(
            it.id, n_explored=20, n_accurate=10 + k, n_candidate=8 - k, n_failed=2
        )
        store.record_step_time(it.id, "train", 1.0 + k, complete=True)
        store.record_step_time(it.id, "label", 0.5, complete=True)
        store.finish_iteration(it.id, f"iteration {k}: accurate fraction below 0.9")
    return {
        "done": done,
        "failed": failed,
        "pending": pending,
        "structures": rest,
        "iterations": [it.id for it in its],
    }
