"""A campaign run triggered through the API is a real Prefect flow run (embedded default:
background thread + the temporary local Prefect server): 202 + run id, the run's status and
Prefect flow-run id read back, and the campaign's iteration recorded in the database."""

from __future__ import annotations

import pytest

from ._data import tiny_config
from .test_actions import _wait


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_next_iteration_runs_the_campaign_flow(client, auth, store):
    cfg = tiny_config(
        "flow", convergence={"max_iterations": 3}, training={"max_epochs": 5, "max_time_s": 5}
    )
    cid = client.post("/api/v1/campaigns", json={"config": cfg}, headers=auth).json()["id"]
    r = client.post(f"/api/v1/campaigns/{cid}/next-iteration", headers=auth)
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["kind"] == "campaign"
    dup = client.post(f"/api/v1/campaigns/{cid}/resume", headers=auth)
    assert dup.status_code == 409  # refused while the first run is queued or holds the campaign
    assert "already" in dup.json()["detail"] or "held by" in dup.json()["detail"]
    done = _wait(client, run["id"], timeout=240)
    assert done["status"] == "completed", done["message"]
    assert done["prefect_flow_run_id"]
    # exactly one more iteration, not a run to the stop rule: the campaign waits for its next run
    assert done["result"]["status"] == "queued", done["result"]
    assert client.get(f"/api/v1/campaigns/{cid}").json()["status"] == "queued"
    assert done["result"]["iterations_after"] == 1
    its = client.get(f"/api/v1/campaigns/{cid}/iterations").json()
    assert [it["status"] for it in its] == ["done"]
    assert its[0]["labels"]["done"] > 0
    assert len(client.get(f"/api/v1/campaigns/{cid}/models").json()) == 1
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as pc:
        fr = pc.read_flow_run(done["prefect_flow_run_id"])
    assert fr.state.is_completed() and fr.flow_id is not None
