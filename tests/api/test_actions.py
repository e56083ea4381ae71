"""Actions: a triggered retrain runs in the background (202 + run id) and produces a new
model row whose checkpoint downloads and loads."""

from __future__ import annotations

import hashlib

import pytest

from ._data import seed_campaign, tiny_config


def _wait(client, run_id, timeout=120.0):
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        r = client.get(f"/api/v1/runs/{run_id}").json()
        if r["status"] not in ("queued", "running", "submitted"):
            return r
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


@pytest.mark.parametrize(  # 17 s on SQLite: the default suite retrains on PostgreSQL
    "db_url",
    [
        pytest.param("sqlite", marks=pytest.mark.slow),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
    indirect=True,
)
def test_retrain_produces_a_new_model(client, auth, store, tmp_path):
    cid = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth).json()[
        "id"
    ]
    ids = seed_campaign(store, cid, n_done=6, n_failed=1, n_pending=1)
    r = client.post(
        f"/api/v1/campaigns/{cid}/retrain", headers=auth, json={"max_epochs": 3, "max_time_s": 20}
    )
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["kind"] == "retrain" and run["status"] in ("queued", "running")
    again = client.post(f"/api/v1/campaigns/{cid}/retrain", headers=auth, json={"max_epochs": 3})
    assert again.status_code in (202, 409)  # 409 while the first is still active
    done = _wait(client, run["id"])
    assert done["status"] == "completed", done["message"]
    if again.status_code == 202:
        _wait(client, again.json()["id"])
    models = client.get(f"/api/v1/campaigns/{cid}/models").json()
    assert len(models) == (2 if again.status_code == 202 else 1)
    m = models[0]
    assert m["id"] == done["result"]["model_id"] and m["member_count"] == 2
    assert m["n_training_labels"] == 6 == done["result"]["n_train"]
    rec = store.list_models(cid)[0]
    assert sorted(rec.training_label_ids.tolist()) == sorted(ids["done"])
    assert m["validation"]["trigger"] == "api-retrain" and m["iteration_index"] is None
    blob = client.get(m["download_url"])
    assert blob.status_code == 200
    assert hashlib.sha256(blob.content).hexdigest() == m["checkpoint_sha256"]
    path = tmp_path / "dl.pt"
    path.write_bytes(blob.content)
    from mlip_core.checkpoint import load_committee

    model, _ = load_committee(path)
    assert model.n_members == 2
    runs = client.get(f"/api/v1/runs?campaign_id={cid}").json()
    assert run["id"] in [x["id"] for x in runs]


def test_retrain_without_labels_is_409(client, auth):
    cid = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth).json()[
        "id"
    ]
    r = client.post(f"/api/v1/campaigns/{cid}/retrain", headers=auth)
    assert r.status_code == 409 and "no done labels" in r.json()["detail"]
    r = client.post(f"/api/v1/campaigns/{cid}/retrain", headers=auth, json={"max_epochs": 0})
    assert r.status_code == 422
    r = client.post(f"/api/v1/campaigns/{cid}/retrain", headers=auth, json={"epochs": 3})
    assert r.status_code == 422 and "epochs" in r.text
