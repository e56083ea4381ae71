"""Deployments and schedules (cron and interval) on the Prefect API, the deployed flow's
continue-by-N-iterations semantics, `pesflow db upgrade` with its wait, and the API's
schedule endpoint without a Prefect server."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workflows.deploy import DeployError, deploy_campaign, deployment_name, wait_for_database

from ._campaign import tiny


def _read(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(deployment_name(name))


def test_cron_and_interval_deployments(prefect_harness) -> None:
    info = deploy_campaign("cron-campaign", cron="*/1 * * * *", iterations=1)
    assert info.name == "pesflow-campaign-iterations/cron-campaign"
    assert info.schedule == "cron '*/1 * * * *' (UTC)"
    dep = _read("cron-campaign")
    assert dep.entrypoint == "workflows.deployed.campaign_iterations"
    assert dep.work_pool_name == "pesflow"
    assert dep.parameters == {"campaign": "cron-campaign", "iterations": 1}
    assert [s.schedule.cron for s in dep.schedules] == ["*/1 * * * *"]
    # registering again replaces the schedule (one schedule, now an interval)
    deploy_campaign("cron-campaign", interval=20, iterations=2)
    dep = _read("cron-campaign")
    assert len(dep.schedules) == 1
    assert dep.schedules[0].schedule.interval.total_seconds() == 20
    assert dep.parameters["iterations"] == 2
    # the pool runs `python -m prefect.engine` (flow runs stay in the worker's process group)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("pesflow")
    assert pool.type == "process"
    assert pool.base_job_template["variables"]["properties"]["command"]["default"] == (
        "python -m prefect.engine"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cron": "every minute"}, "invalid schedule"),
        ({"cron": "* * * * *", "interval": 60}, "exactly one"),
        ({}, "exactly one"),
        ({"interval": 0.5}, "interval must be >= 1"),
        ({"interval": 60, "iterations": 0}, "iterations must be >= 1"),
    ],
)
def test_bad_schedules(prefect_harness, kwargs: dict, match: str) -> None:
    with pytest.raises(DeployError, match=match):
        deploy_campaign("bad", **kwargs)


def test_deploy_needs_a_server() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: None}),
        pytest.raises(DeployError, match="need a Prefect server"),
    ):
        deploy_campaign("x", interval=60)


def test_deployed_flow_adds_one_iteration_per_run(
    tmp_path: Path, monkeypatch, prefect_harness
) -> None:
    from database import sqlite_url
    from workflows.config import parse_config
    from workflows.deployed import campaign_iterations
    from workflows.steps import close_stores, open_store, setup_campaign

    url = sqlite_url(tmp_path)
    monkeypatch.setenv("PESFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PESFLOW_DATABASE_URL", url)
    cfg = parse_config(tiny(name="sched-unit", convergence={"max_iterations": 3}))
    store = open_store(url)
    setup_campaign(store, cfg, tmp_path)
    out = campaign_iterations("sched-unit", iterations=1)
    assert (out["iterations_before"], out["iterations_after"], out["status"]) == (0, 1, "queued")
    rec = store.get_campaign("sched-unit")
    assert rec.status == "queued" and "continues at its next run" in rec.status_message
    assert rec.lease is None  # the run gave its lease back
    close_stores()  # a new process would reopen everything from the database
    store = open_store(url)
    out = campaign_iterations("sched-unit", iterations=1)
    assert (out["iterations_before"], out["iterations_after"]) == (1, 2)
    assert [i.status for i in store.list_iterations(rec.id)] == ["done", "done"]
    # a paused campaign (by a user or its stop rule) is skipped by scheduled runs
    store.set_campaign_status(rec.id, "paused", "paused by test")
    out = campaign_iterations("sched-unit", iterations=1)
    assert out["skipped"] is True and out["iterations_after"] == 2
    # a campaign another process holds is skipped too, naming the holder
    store.set_campaign_status(rec.id, "queued", None)
    store.acquire_lease(rec.id, token="x", host="node9", pid=5, purpose="pesflow run", ttl_s=60)
    out = campaign_iterations("sched-unit", iterations=1)
    assert out["skipped"] is True and "held by node9 pid 5" in out["message"]
    store.release_lease(rec.id, "x", status="queued")
    # the campaign's own rule still stops it: the last iteration ends it as before
    out = campaign_iterations(rec.id, iterations=5)
    assert out["iterations_after"] == 3 and out["status"] in ("paused", "converged")
    assert store.get_campaign(rec.id).status == out["status"]


def test_db_upgrade_and_wait(tmp_path: Path) -> None:
    from pesflow.cli import app

    res = CliRunner().invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "database at revision" in res.output
    assert (tmp_path / "d" / "pesflow.sqlite").exists()
    t0 = time.monotonic()
    with pytest.raises(DeployError, match="not reachable after 1 s"):
        wait_for_database("postgresql+psycopg://postgres@127.0.0.1:1/none", timeout=1, interval=0.2)
    assert time.monotonic() - t0 < 10


def test_schedule_endpoint_without_server(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from api.app import create_app
    from api.settings import get_api_settings
    from database import Store

    settings = get_api_settings(data_dir=tmp_path)
    store = Store.from_url(settings.resolved_database_url())
    store.add_api_token("t", "pf_schedule-test-token-000000")
    auth = {"Authorization": "Bearer pf_schedule-test-token-000000"}
    with contextlib.ExitStack() as stack:
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: None}))
        client = stack.enter_context(TestClient(create_app(settings, store=store)))
        r = client.post(
            "/api/v1/campaigns",
            json={"config": tiny(name="api-sched", execution={"profile": "local"})},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        url = f"/api/v1/campaigns/{cid}/schedule"
        assert client.post(url, json={"cron": "* * * * *"}).status_code == 401
        r = client.post(url, json={"cron": "* * * * *"}, headers=auth)
        assert r.status_code == 503 and "Prefect server" in r.json()["detail"]
        r = client.post(url, json={"cron": "* * * * *", "interval_seconds": 60}, headers=auth)
        assert r.status_code == 422 and "exactly one" in r.json()["detail"]
        assert (
            client.post(
                "/api/v1/campaigns/999/schedule", json={"cron": "* * * * *"}, headers=auth
            ).status_code
            == 404
        )
    store.close()
