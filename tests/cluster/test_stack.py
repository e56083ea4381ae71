"""The whole stack from ``scripts/stack`` (real PostgreSQL, a Prefect server on PostgreSQL,
the API, the worker): a campaign created through the REST API gets an interval schedule, the
server's scheduler fires runs that each add one iteration, and a worker killed (SIGKILL, its
whole process group) in the middle of a run is restarted and the campaign continues with
nothing lost. Every process group the stack started is verified gone at the end."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ._campaign import tiny
from ._stack import group_alive, postgres_up, running_stack

API = {"execution": {"profile": "local"}}  # API bodies name a profile

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not postgres_up(), reason="PostgreSQL does not answer on 127.0.0.1:5432"),
]

TOKEN = "pf_stack-test-token-0123456789"


def _wait(cond: Callable[[], bool], what: str, timeout: float, logs: Callable[[], str]) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return
        except Exception:  # not there yet
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{logs()}")


def _utc(t: datetime | str) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _check_invariants(store, cid: int, done_ids: set[int]) -> None:
    """Nothing labelled twice, no label lost, one model per finished iteration."""
    labels = store.list_labels(cid, limit=None)
    pairs = Counter((lb.structure_id, lb.settings_hash) for lb in labels)
    assert max(pairs.values()) == 1, "a structure was labelled twice"
    by_structure = {lb.structure_id: lb for lb in labels}
    for sel in store.list_selections(cid):
        if sel.iteration_id in done_ids:
            lb = by_structure.get(sel.structure_id)
            assert lb is not None, f"selected structure {sel.structure_id} has no label"
            assert lb.status in ("done", "failed"), (sel.structure_id, lb.status)
    models = Counter(m.iteration_id for m in store.list_models(cid) if m.iteration_id)
    for iid in done_ids:
        assert models[iid] == 1, f"iteration {iid}: {models[iid]} models"


def test_stack_schedule_fires_runs_and_worker_kill_resumes(tmp_path: Path) -> None:
    from database import Store

    with running_stack(tmp_path) as st:

        def logs() -> str:
            services = ("pesflow-worker", "pesflow-api", "prefect-server")
            return "\n".join(f"== {s}\n{st.log(s)}" for s in services)

        store = Store.from_url(st.db_url)
        try:
            store.add_api_token("ci", TOKEN)
            api = httpx.Client(
                base_url=st.api, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            # 0. the API's long work goes to the worker too (PESFLOW_API_DEPLOYMENT)
            r = api.post(
                "/campaigns",
                json={
                    "config": tiny(
                        name="via-api", seed=99, convergence={"max_iterations": 1}, **API
                    )
                },
            )
            assert r.status_code == 201, r.text
            r = api.post(f"/campaigns/{r.json()['id']}/resume")
            assert r.status_code == 202, r.text
            assert "pesflow-campaign-iterations/api" in r.json()["message"]
            run_id = r.json()["id"]
            _wait(
                lambda: api.get(f"/runs/{run_id}").json()["status"] == "completed",
                "the API-submitted run to complete on the worker",
                90,
                logs,
            )
            assert store.get_campaign("via-api").status == "paused"  # max_iterations=1

            r = api.post(
                "/campaigns",
                json={"config": tiny(name="scheduled", convergence={"max_iterations": 8}, **API)},
            )
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            r = api.post(f"/campaigns/{cid}/schedule", json={"interval_seconds": 10})
            assert r.status_code == 201, r.text
            dep = r.json()
            assert dep["deployment"] == "pesflow-campaign-iterations/scheduled"
            assert dep["parameters"] == {"campaign": "scheduled", "iterations": 1}
            assert dep["schedule"] == "every 10 s"

            def done() -> list:
                return [i for i in store.list_iterations(cid) if i.status == "done"]

            # 1. the scheduler fires >= 2 runs, each adding one iteration
            prefect = httpx.Client(base_url=st.prefect_api, timeout=30)

            def flow_runs(state: str) -> list[dict]:
                return prefect.post(
                    "/flow_runs/filter",
                    json={
                        "deployments": {"id": {"any_": [dep["deployment_id"]]}},
                        "flow_runs": {"state": {"type": {"any_": [state]}}},
                    },
                ).json()

            _wait(
                lambda: len(done()) >= 2 and len(flow_runs("COMPLETED")) >= 2,
                "two scheduled runs, two iterations",
                150,
                logs,
            )
            runs = flow_runs("COMPLETED")
            for r_ in runs:
                assert r_["parameters"] == {"campaign": "scheduled", "iterations": 1}
                assert r_["auto_scheduled"] is True  # created by the server's scheduler
            owners = []
            for it in done()[:2]:
                fin = _utc(it.finished_at)
                owner = [
                    r_["id"]
                    for r_ in runs
                    if r_["start_time"]
                    and r_["end_time"]
                    and _utc(r_["start_time"]) <= fin <= _utc(r_["end_time"])
                ]
                assert len(owner) == 1, (it.index, fin, runs)
                owners.append(owner[0])
            assert owners[0] != owners[1], "both iterations came from one run"
            rec = store.get_campaign(cid)
            if rec.status == "queued":  # between two runs (else the next one already runs)
                assert "continues at its next run" in rec.status_message
            else:
                assert rec.status == "running" and rec.lease is not None and rec.lease.alive

            # 2. kill the worker (its process group: the flow run dies with it) mid-iteration
            def running_iteration():
                its = store.list_iterations(cid)
                return next((i for i in its if i.status == "running" and i.index >= 2), None)

            _wait(lambda: running_iteration() is not None, "a run in progress", 90, logs)
            victim = running_iteration()
            worker_pgid = int((st.dir / "pids" / "pesflow-worker.pid").read_text())
            os.killpg(worker_pgid, signal.SIGKILL)
            _wait(lambda: not group_alive(worker_pgid), "the killed worker to vanish", 10, logs)
            assert store.get_iteration(cid, victim.index).status == "running"

            # 3. restart it (start only starts what is not running) and see the campaign go on
            res = st.run("start")
            assert res.returncode == 0, res.stdout
            assert "prefect-server already running" in res.stdout
            _wait(
                lambda: store.get_iteration(cid, victim.index).status == "done",
                f"iteration {victim.index} to finish after the restart",
                120,
                logs,
            )
            done_ids = {i.id for i in done()}
            _check_invariants(store, cid, done_ids)
            indices = sorted(i.index for i in done())
            assert indices == list(range(len(indices)))  # nothing skipped, nothing redone
            assert len(flow_runs("CRASHED")) >= 1  # the killed run, marked at worker restart
        finally:
            store.close()
