"""Per-regime validation errors in the campaign and model responses, and the parity data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlip_core.labelled import FramePredictions
from workflows.parity import write_parity

from ._data import seed_campaign, tiny_config


def test_regimes_and_parity_of_the_latest_model(client, auth, store, settings):
    cid = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth).json()[
        "id"
    ]
    ids = seed_campaign(store, cid, n_done=4, n_failed=1, n_pending=1)
    assert client.get(f"/api/v1/campaigns/{cid}").json()["validation_regimes"] == {}
    # two frames (2 and 1 atoms) of two regimes, as the train step writes them
    pred = FramePredictions(
        n_atoms=np.array([2, 1]),
        energy_pred=np.array([-3.5, -3.0]),
        energy_ref=np.array([-3.4, -3.1]),
        forces_pred=[np.ones((2, 3)), np.zeros((1, 3))],
        forces_ref=[np.zeros((2, 3)), np.full((1, 3), 0.5)],
        stress_pred=np.full((2, 6), np.nan),
        stress_ref=np.full((2, 6), np.nan),
        member_energy=np.zeros((2, 2)),
        member_force_sq=np.zeros((2, 2)),
        max_devi_f=np.array([0.1, 0.2]),
    )
    uri = "campaigns/test/models/iter-001.parity.npz"
    write_parity(Path(settings.data_dir) / uri, pred, ["bulk-fcc", "surface-111"])
    regimes = {
        "bulk-fcc": {"n_frames": 1, "force_rmse": 1.0, "force_mae": 1.0, "force_max": 1.0},
        "surface-111": {"n_frames": 1, "force_rmse": 0.5, "force_max": 0.5, "energy_max": 0.1},
    }
    m = store.record_model(
        cid,
        member_count=2,
        checkpoint_uri="campaigns/test/models/iter-001.pt",
        checkpoint_sha256="a" * 64,
        training_label_ids=ids["done"],
        validation={"val_force_rmse": 0.9, "regimes": regimes, "parity_uri": uri},
    )
    detail = client.get(f"/api/v1/campaigns/{cid}").json()
    assert detail["latest_model_id"] == m.id
    shown = detail["validation_regimes"]
    assert shown["bulk-fcc"]["force_rmse_meV"] == pytest.approx(1000.0)
    assert shown["surface-111"]["force_max_meV"] == pytest.approx(500.0)
    assert shown["surface-111"]["energy_max_meV"] == pytest.approx(100.0)
    assert shown["surface-111"]["stress_rmse_gpa"] is None
    model = client.get(f"/api/v1/models/{m.id}").json()
    assert model["regimes"] == shown and model["parity_url"] == f"/api/v1/models/{m.id}/parity"
    parity = client.get(model["parity_url"]).json()
    assert parity["model_id"] == m.id
    bulk, slab = parity["regimes"]["bulk-fcc"], parity["regimes"]["surface-111"]
    assert bulk["n_frames"] == 1 and bulk["force_pred"] == [1.0] * 6
    assert bulk["force_ref"] == [0.0] * 6 and bulk["energy_pred"] == [-3.5]
    assert slab["force_ref"] == [0.5] * 3 and slab["energy_ref"] == [-3.1]
    # a model trained before parity data were kept: 404 with a reason
    old = store.record_model(
        cid,
        member_count=2,
        checkpoint_uri="campaigns/test/models/old.pt",
        checkpoint_sha256="b" * 64,
        training_label_ids=ids["done"],
        validation={"val_force_rmse": 0.9},
    )
    r = client.get(f"/api/v1/models/{old.id}/parity")
    assert r.status_code == 404 and "no stored validation predictions" in r.json()["detail"]
    assert client.get(f"/api/v1/models/{old.id}").json()["parity_url"] is None
