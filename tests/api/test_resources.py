"""Iterations, structures and labels (filters, paging), models, dashboard data."""

from __future__ import annotations

import pytest

from ._data import seed_campaign, tiny_config


@pytest.fixture
def seeded(client, auth, store):
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    cid = r.json()["id"]
    return cid, seed_campaign(store, cid, n_done=6, n_failed=2, n_pending=3)


def test_iterations_metrics(client, seeded, store):
    cid, ids = seeded
    it1 = store.list_iterations(cid)[1]
    store.record_model(
        cid,
        member_count=4,
        checkpoint_uri="campaigns/x/models/iter-001.pt",
        checkpoint_sha256="a" * 64,
        training_label_ids=ids["done"],
        iteration_id=it1.id,
        validation={"val_force_rmse": 0.05, "val_energy_rmse": 0.005},
    )
    its = client.get(f"/api/v1/campaigns/{cid}/iterations").json()
    assert [it["index"] for it in its] == [0, 1]
    assert its[0]["labels"]["done"] == 6 and its[1]["labels"] == {
        "pending": 3,
        "running": 0,
        "done": 0,
        "failed": 2,
    }
    assert its[1]["accurate_fraction"] == pytest.approx(11 / 20)
    assert its[1]["val_force_rmse"] == pytest.approx(0.05)
    assert its[0]["step_timings"] == {"train": 1.0, "label": 0.5, "decide": 0.0}
    assert its[0]["val_force_rmse"] is None  # no model recorded for iteration 0
    assert its[1]["decision"] == "iteration 1: accurate fraction below 0.9"
    assert (its[0]["walkers"], its[0]["walkers_cut"], its[0]["walkers_failed"]) == (1, 0, 0)
    one = client.get(f"/api/v1/campaigns/{cid}/iterations/1").json()
    assert one == its[1]
    assert client.get(f"/api/v1/campaigns/{cid}/iterations/7").status_code == 404
    h = client.get(f"/api/v1/campaigns/{cid}/iterations/0/histogram?bins=10").json()
    assert sum(h["counts"]) == 20 == h["n_frames"] and len(h["edges"]) == 11
    assert (h["trust_lo"], h["trust_hi"]) == (0.05, 0.5)
    assert client.get(f"/api/v1/campaigns/{cid}/iterations/0/histogram?bins=0").status_code == 422


def test_structures_filter_and_paging(client, seeded):
    cid, ids = seeded
    base = f"/api/v1/campaigns/{cid}/structures"
    all_ = client.get(base + "?limit=1000").json()
    # 6 done + 2 failed + 3 pending + the campaign's initial structure (unselected: absent)
    assert all_["total"] == 11 and len(all_["items"]) == 11
    pages = [client.get(f"{base}?offset={o}&limit=4").json() for o in (0, 4, 8)]
    assert [len(p["items"]) for p in pages] == [4, 4, 3]
    assert [s["id"] for p in pages for s in p["items"]] == [s["id"] for s in all_["items"]]
    failed = client.get(base + "?label_status=failed").json()
    assert failed["total"] == 2 and {s["label_status"] for s in failed["items"]} == {"failed"}
    boot = client.get(base + "?reason=bootstrap").json()
    assert boot["total"] == 6
    it1 = client.get(base + "?iteration=1").json()
    assert it1["total"] == 5 and all(s["max_force_dev"] is not None for s in it1["items"])
    assert client.get(base + "?limit=0").status_code == 422
    assert client.get(base + "?offset=-1").status_code == 422
    assert client.get(base + "?label_status=bogus").status_code == 422
    s = client.get(f"/api/v1/structures/{ids['structures'][0]}").json()
    assert s["natoms"] == 4 and len(s["positions"]) == 4 and s["formula"] == "Cu4"
    assert s["state"] == {}  # no constraints, moments, charges or tags on this one
    assert client.get("/api/v1/structures/99999").status_code == 404


def test_labels_filter_and_paging(client, seeded):
    cid, ids = seeded
    base = f"/api/v1/campaigns/{cid}/labels"
    page = client.get(base + "?status=done&limit=4").json()
    assert page["total"] == 6 and len(page["items"]) == 4
    rest = client.get(base + "?status=done&limit=4&offset=4").json()
    assert len(rest["items"]) == 2
    assert {lb["id"] for lb in page["items"] + rest["items"]} == set(ids["done"])
    failed = client.get(base + "?status=failed").json()["items"]
    assert sorted(lb["failure_kind"] for lb in failed) == ["scf_unconverged", "timeout"]
    assert client.get(base + "?failure_kind=timeout").json()["total"] == 1
    assert client.get(base + "?status=pending&iteration=1").json()["total"] == 3
    assert client.get(base + "?status=done&iteration=1").json()["total"] == 0
    assert client.get(base + "?status=nope").status_code == 422
    one = client.get(f"/api/v1/labels/{ids['done'][0]}").json()
    assert len(one["forces"]) == 4 and one["energy"] is not None
    assert client.get("/api/v1/labels/424242").status_code == 404


def test_dashboard_data(client, seeded):
    cid, _ids = seeded
    d = client.get(f"/api/v1/campaigns/{cid}/dashboard").json()
    assert d["labels_new"] == [6, 0] and d["labels_cumulative"] == [6, 6]
    assert d["failures_by_kind"] == {"scf_unconverged": [0, 1], "timeout": [0, 1]}
    devs = [u["max_force_dev"] for u in d["most_uncertain"]]
    assert devs == sorted(devs, reverse=True) and len(devs) == 5
    assert d["histogram"]["iteration_index"] == 1 and d["active"] is False


def test_models_empty_and_unknown(client, seeded):
    cid, _ = seeded
    assert client.get(f"/api/v1/campaigns/{cid}/models").json() == []
    assert client.get("/api/v1/models/5").status_code == 404
    assert client.get("/api/v1/models/5/checkpoint").status_code == 404
    assert client.get("/api/v1/runs/nope").status_code == 404


def test_model_listing_counts_training_labels(client, seeded, store):
    cid, ids = seeded
    it = store.list_iterations(cid)[1]
    store.record_model(
        cid,
        member_count=4,
        checkpoint_uri="/nowhere/a.pt",
        checkpoint_sha256="a" * 64,
        training_label_ids=ids["done"][:5],
        iteration_id=it.id,
        validation={"val_force_rmse": 0.05},
    )
    store.record_model(
        cid,
        member_count=4,
        checkpoint_uri="/nowhere/b.pt",
        checkpoint_sha256="b" * 64,
        training_label_ids=ids["done"],
        validation={"n_train": 6},
    )
    a, b = client.get(f"/api/v1/campaigns/{cid}/models").json()
    assert (a["n_training_labels"], a["iteration_index"], a["iteration_id"]) == (5, 1, it.id)
    assert (b["n_training_labels"], b["iteration_index"]) == (6, None)
    assert client.get(f"/api/v1/models/{a['id']}").json() == a
    r = client.get(a["download_url"])
    assert r.status_code == 404 and "missing on the server" in r.json()["detail"]
