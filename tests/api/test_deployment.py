"""With ``PESFLOW_API_DEPLOYMENT`` set, a campaign run and a retrain are submitted to Prefect
deployments (``run_deployment(..., timeout=0)``) and their state is read back from the Prefect
API.

Stand-in deployment flows (the signatures of ``workflows.deployed.campaign_iterations`` and
``workflows.deployed.retrain_campaign``) are served by a ``prefect.serve`` subprocess against
the test harness's Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ._data import seed_campaign, tiny_config
from .test_actions import _wait

FLOW = textwrap.dedent("""
    from prefect import flow, serve

    @flow(name="pesflow-campaign-iterations")
    def campaign_iterations(campaign: int | str, iterations: int | None = 1,
                            retry_failed: bool = False) -> dict:
        return {"campaign": campaign, "iterations": iterations, "status": "paused"}

    @flow(name="pesflow-retrain-campaign")
    def retrain_campaign(campaign: int | str, max_epochs: int | None = None,
                         max_time_s: float | None = None, extra: dict | None = None) -> dict:
        return {"model_id": 0, "message": f"stand-in retrain of {campaign}"}

    if __name__ == "__main__":
        serve(campaign_iterations.to_deployment(name="api-test"),
              retrain_campaign.to_deployment(name="api"))
""")


@pytest.fixture(scope="module")
def served_deployment(tmp_path_factory, prefect_harness):
    """Its own Prefect API inside the session's: the session harness is entered first, so the
    settings contexts nest and exit in order (entered the other way round, this module's exit
    would reset the context the session harness set, leaving later tests without an API)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    work = tmp_path_factory.mktemp("deployment")
    (work / "deploy_flow.py").write_text(FLOW)
    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=90),
    ):
        env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "deploy_flow.py"],
            cwd=work,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            with get_client(sync_client=True) as client:
                for _ in range(600):
                    try:
                        client.read_deployment_by_name("pesflow-campaign-iterations/api-test")
                        client.read_deployment_by_name("pesflow-retrain-campaign/api")
                        break
                    except Exception:
                        time.sleep(0.1)
                else:
                    raise AssertionError("the deployment was not registered within 60 s")
            yield "pesflow-campaign-iterations/api-test"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_resume_submits_to_the_deployment(served_deployment, settings, store, auth):
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings.api_deployment = served_deployment
    settings.prefect_ui_url = "http://prefect.example:4200/"
    with TestClient(create_app(settings, store=store)) as client:
        # named like the served deployment: pesflow-campaign-iterations/<campaign name>
        cfg = tiny_config("api-test")
        cid = client.post("/api/v1/campaigns", json={"config": cfg}, headers=auth).json()["id"]
        assert client.get(f"/api/v1/campaigns/{cid}/flow-runs").json()["runs"] == []
        r = client.post(f"/api/v1/campaigns/{cid}/resume", headers=auth)
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["status"] == "submitted" and run["prefect_flow_run_id"]
        done = _wait(client, run["id"], timeout=120)
        assert done["status"] == "completed" and done["finished_at"] is not None
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as pc:
            fr = pc.read_flow_run(run["prefect_flow_run_id"])
        assert fr.parameters == {"campaign": cid, "iterations": None}  # resume: to the stop rule
        r = client.post(f"/api/v1/campaigns/{cid}/next-iteration", headers=auth)
        assert r.status_code == 202, r.text
        assert _wait(client, r.json()["id"], timeout=120)["status"] == "completed"
        with get_client(sync_client=True) as pc:
            fr = pc.read_flow_run(r.json()["prefect_flow_run_id"])
        assert fr.parameters == {"campaign": cid, "iterations": 1}
        # the deployment's flow runs as the dashboard lists them, with links into the UI
        listed = client.get(f"/api/v1/campaigns/{cid}/flow-runs").json()
        assert listed["available"] and listed["deployment"] == served_deployment
        assert [r["parameters"]["iterations"] for r in listed["runs"]] == [1, None]
        assert {r["state"] for r in listed["runs"]} == {"COMPLETED"}
        assert listed["runs"][0]["url"] == (
            f"http://prefect.example:4200/runs/flow-run/{listed['runs'][0]['id']}"
        )
        got = client.get(f"/api/v1/runs/{run['id']}").json()
        assert got["prefect_url"] == (
            f"http://prefect.example:4200/runs/flow-run/{run['prefect_flow_run_id']}"
        )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_retrain_submits_to_the_retrain_deployment(served_deployment, settings, store, auth):
    from fastapi.testclient import TestClient
    from prefect.client.orchestration import get_client

    from api.app import create_app

    settings.api_deployment = served_deployment
    with TestClient(create_app(settings, store=store)) as client:
        cfg = tiny_config("api-retrain")
        cid = client.post("/api/v1/campaigns", json={"config": cfg}, headers=auth).json()["id"]
        seed_campaign(store, cid, n_done=3, n_failed=1, n_pending=1)
        r = client.post(f"/api/v1/campaigns/{cid}/retrain", headers=auth, json={"max_epochs": 2})
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["kind"] == "retrain" and run["status"] == "submitted"
        again = client.post(f"/api/v1/campaigns/{cid}/retrain", headers=auth)
        assert again.status_code == 409  # one retrain of a campaign at a time
        done = _wait(client, run["id"], timeout=120)
        assert done["status"] == "completed", done["message"]
        with get_client(sync_client=True) as pc:
            fr = pc.read_flow_run(run["prefect_flow_run_id"])
        assert fr.parameters == {
            "campaign": cid,
            "max_epochs": 2,
            "max_time_s": None,
            "extra": {"api_run_id": run["id"]},
        }
