"""Campaigns: create from a config, list, show, pause/resume/cancel; errors are 4xx with a
message."""

from __future__ import annotations

from ._data import tiny_config


def _create(client, auth, name="tiny", **over):
    r = client.post("/api/v1/campaigns", json={"config": tiny_config(name, **over)}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_list_show(client, auth, store):
    c = _create(client, auth)
    assert c["name"] == "tiny" and c["status"] == "created"
    assert c["config"]["model"]["n_members"] == 2 and "_runtime" not in c["config"]
    rec = store.get_campaign(c["id"])
    assert rec.config["_runtime"]["initial_structure_ids"]  # set up like `pesflow run`
    _create(client, auth, "second")
    listed = client.get("/api/v1/campaigns").json()
    assert [x["name"] for x in listed] == ["tiny", "second"]
    assert listed[0]["labels"] == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    shown = client.get(f"/api/v1/campaigns/{c['id']}").json()
    assert shown["id"] == c["id"] and shown["n_iterations"] == 0


def test_bad_config_is_422_with_the_key(client, auth, store):
    r = client.post(
        "/api/v1/campaigns",
        headers=auth,
        json={"config": tiny_config(trust={"lo": 0.5, "hi": 0.1})},
    )
    assert r.status_code == 422
    assert "trust" in r.json()["detail"]
    r = client.post(
        "/api/v1/campaigns", headers=auth, json={"config": {**tiny_config(), "comittee": {}}}
    )
    assert r.status_code == 422 and "comittee" in r.json()["detail"]
    r = client.post("/api/v1/campaigns", headers=auth, json={"cfg": {}})
    assert r.status_code == 422
    r = client.post(
        "/api/v1/campaigns",
        headers={**auth, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 400 and r.json() == {"detail": "request body: not valid JSON"}
    assert store.list_campaigns() == []


def test_duplicate_name_is_409(client, auth):
    _create(client, auth)
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_unknown_campaign_is_404(client, auth):
    for path in (
        "/api/v1/campaigns/999",
        "/api/v1/campaigns/999/iterations",
        "/api/v1/campaigns/999/structures",
        "/api/v1/campaigns/999/labels",
        "/api/v1/campaigns/999/models",
        "/api/v1/campaigns/999/dashboard",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "999" in r.json()["detail"]
    assert client.post("/api/v1/campaigns/999/pause", headers=auth).status_code == 404
    assert client.get("/api/v1/campaigns/abc").status_code == 422


def test_pause_cancel_and_refused_resume(client, auth, store):
    c = _create(client, auth)
    r = client.post(
        f"/api/v1/campaigns/{c['id']}/pause", headers=auth, json={"message": "maintenance window"}
    )
    assert r.status_code == 200 and r.json()["status"] == "paused"
    assert store.get_campaign(c["id"]).status_message == "maintenance window"
    r = client.post(f"/api/v1/campaigns/{c['id']}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    for action in ("resume", "next-iteration", "pause"):
        r = client.post(f"/api/v1/campaigns/{c['id']}/{action}", headers=auth)
        assert r.status_code == 409, action
        assert "cancelled" in r.json()["detail"]
    r = client.post(
        f"/api/v1/campaigns/{c['id']}/pause", headers=auth, json={"message": "x" * 5000}
    )
    assert r.status_code == 422


def test_resume_of_a_campaign_held_elsewhere_is_refused_until_its_holder_is_gone(
    settings, store, auth
):
    import time

    from fastapi.testclient import TestClient

    from api.app import create_app

    from .test_schemathesis import _NoopRunner

    with TestClient(create_app(settings, store=store, runner=_NoopRunner(1))) as client:
        c = _create(client, auth)
        # `pesflow run` in a shell on another node holds the campaign
        store.acquire_lease(
            c["id"], token="shell", host="node7", pid=99, purpose="pesflow run", ttl_s=60
        )
        got = client.get(f"/api/v1/campaigns/{c['id']}").json()
        assert got["status"] == "running" and got["held_by"].startswith(
            "node7 pid 99 (pesflow run)"
        )
        for action in ("resume", "next-iteration"):
            r = client.post(f"/api/v1/campaigns/{c['id']}/{action}", headers=auth)
            assert r.status_code == 409 and "held by node7 pid 99" in r.json()["detail"]
        # the holder dies: its lease expires, the campaign reads interrupted and resumes
        store.renew_lease(c["id"], "shell", 0.1)
        time.sleep(0.3)
        got = client.get(f"/api/v1/campaigns/{c['id']}").json()
        assert got["status"] == "interrupted" and got["held_by"] is None
        assert "node7 pid 99" in got["status_message"]
        r = client.post(f"/api/v1/campaigns/{c['id']}/resume", headers=auth)
        assert r.status_code == 202 and r.json()["kind"] == "campaign"
        assert store.get_campaign(c["id"]).status == "queued"


def test_a_campaign_queued_by_an_api_that_stopped_is_marked_interrupted(settings, store, auth):
    """The embedded runner's queue lives in the API process: a campaign it queued must not wait
    as ``queued`` for a run that died with it; the next API process says so."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    c = store.create_campaign("orphan", {})
    store.transition_campaign(c.id, "queued", "queued via API by alice")
    other = store.create_campaign("between-runs", {})
    store.transition_campaign(other.id, "queued", "iteration 0 done; continues at its next run")
    with TestClient(create_app(settings, store=store)):
        rec = store.get_campaign(c.id)
        assert rec.status == "interrupted" and "stopped before it started" in rec.status_message
        assert store.get_campaign(other.id).status == "queued"  # a schedule's, left alone


def test_a_queued_run_that_fails_before_it_starts_does_not_leave_the_campaign_queued(
    client, auth, store, monkeypatch
):
    import time

    from workflows import service

    def broken(*args, **kwargs):
        raise RuntimeError("database URL of the workflow layer is wrong")

    monkeypatch.setattr(service, "_handle", broken)
    c = _create(client, auth, name="broken")
    r = client.post(f"/api/v1/campaigns/{c['id']}/resume", headers=auth)
    assert r.status_code == 202
    run_id = r.json()["id"]
    t_end = time.monotonic() + 30
    while client.get(f"/api/v1/runs/{run_id}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < t_end
        time.sleep(0.05)
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "failed"
    rec = store.get_campaign(c["id"])
    assert rec.status == "interrupted" and "did not start" in rec.status_message
