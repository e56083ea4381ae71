"""Campaign status races through the API (issue 12, point 3), on SQLite and on PostgreSQL.

* A cancel sent together with pauses wins: 20 trials of 1 cancel + 4 pauses sent at once to a
  real uvicorn server (its own process, so the requests really run concurrently, each in its own
  transaction) while a process holds the campaign; every trial ends ``cancelled``, and the
  holder giving its lease back with ``paused`` does not undo it.
* A pause (or cancel) sent after a resume was accepted but before the queued run started is
  honoured by that run: the API's single background worker is kept busy by a job the test
  controls, so the run is still queued when the pause arrives; released, the run completes
  without starting (no iteration, no label, no lease left) and the campaign stays paused.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.runner import Runner

from .._procs import stop_group
from ._data import tiny_config
from .conftest import TOKEN

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 20
PAUSES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def server(settings, tmp_path) -> Iterator[str]:
    """``pesflow serve`` (uvicorn) in its own process group on 127.0.0.1, on the test's
    database; stopped by process group at the end and checked gone (process and port)."""
    port = _free_port()
    env = {
        **os.environ,
        "PESFLOW_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PESFLOW_DATABASE_URL", None)
    if settings.database_url:
        env["PESFLOW_DATABASE_URL"] = settings.database_url
    log = (tmp_path / "uvicorn.log").open("wb")
    cmd = [sys.executable, "-m", "pesflow", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as one
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t_end = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the API server exited ({proc.returncode}): "
                    + (tmp_path / "uvicorn.log").read_text()[-2000:]
                )
            try:
                if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > t_end:
                raise AssertionError("the API server did not answer within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        gone = stop_group(proc)
        log.close()
        assert not _alive(proc.pid), "the API server is still running"
        assert gone, "a process of the API server's group is still running"
        with socket.socket() as s:  # nothing listens on the port any more
            assert s.connect_ex(("127.0.0.1", port)) != 0


def _post_together(url: str, paths: list[str]) -> list[httpx.Response]:
    """POST every path at once (one thread and connection each, released by a barrier)."""
    barrier = threading.Barrier(len(paths))
    out: list[httpx.Response | BaseException | None] = [None] * len(paths)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def send(k: int) -> None:
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                c.get("/api/v1/health")  # connected before the barrier
                barrier.wait(30)
                out[k] = c.post(paths[k])
        except BaseException as exc:  # reported by the caller
            out[k] = exc

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for k, r in enumerate(out):
        if not isinstance(r, httpx.Response):
            raise AssertionError(f"POST {paths[k]} got no response: {r!r}")
    return out  # type: ignore[return-value]


def test_cancel_sent_with_pauses_wins_every_time(server, store, auth):
    rng = random.Random(12)
    outcomes: dict[str, int] = {"pause_200": 0, "pause_409": 0}
    for trial in range(TRIALS):
        c = store.create_campaign(f"race-{trial}", {})
        token = f"holder-{trial}"
        store.acquire_lease(
            c.id, token=token, host="node7", pid=4242, purpose="pesflow run", ttl_s=600
        )
        assert store.get_campaign(c.id).status == "running"
        actions = ["cancel"] + ["pause"] * PAUSES
        rng.shuffle(actions)  # the cancel is sent first, last or in between
        responses = _post_together(server, [f"/api/v1/campaigns/{c.id}/{a}" for a in actions])
        where = f"trial {trial} ({' '.join(actions)})"
        for action, r in zip(actions, responses, strict=True):
            if action == "cancel":
                assert r.status_code == 200, (where, r.text)
                assert r.json()["status"] == "cancelled", (where, r.text)
            elif r.status_code == 200:
                # the pause was applied (before the cancel); its answer says so
                assert r.json()["status"] == "paused", (where, r.text)
                outcomes["pause_200"] += 1
            else:
                assert r.status_code == 409, (where, r.status_code, r.text)
                assert "cancelled" in r.json()["detail"], (where, r.text)
                outcomes["pause_409"] += 1
        rec = store.get_campaign(c.id)
        assert rec.status == "cancelled", (where, rec.status, rec.status_message)
        assert rec.finished_at is not None
        # the holder stops at its next boundary and gives the lease back with "paused"
        after = store.release_lease(c.id, token, status="paused", message="paused (holder)")
        assert after.status == "cancelled", where
        assert store.get_campaign(c.id).status == "cancelled", where
        assert store.get_lease(c.id) is None, where
    print(f"\n{TRIALS} trials, 1 cancel + {PAUSES} pauses each: all cancelled; pauses {outcomes}")


# --------------------------------------------------------------------------- queued runs
class _Blocker:
    """Occupies the runner's only worker thread until released."""

    def __init__(self, runner: Runner) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        # campaign id 0 exists nowhere: the campaign's own runs are not refused as duplicates
        self.run = runner.submit("retrain", 0, self._job)
        assert self.started.wait(30), "the blocking job did not start"

    def _job(self, run) -> dict:
        self.started.set()
        if not self.release.wait(120):
            raise TimeoutError("never released")
        return {"message": "blocker released"}


def _wait_run(client: TestClient, run_id: str, timeout: float = 120.0) -> dict:
    t_end = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/runs/{run_id}")
        assert r.status_code == 200, r.text
        run = r.json()
        if run["status"] not in ("queued", "running", "submitted"):
            return run
        if time.monotonic() > t_end:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
        time.sleep(0.05)


def _queued_then(client, runner, cid: int, auth: dict, action: str) -> tuple[dict, dict]:
    """Resume (the run stays queued behind the blocker), then ``action``; release the blocker
    and wait for the run. Returns (action's response, finished run)."""
    blocker = _Blocker(runner)
    try:
        r = client.post(f"/api/v1/campaigns/{cid}/resume", headers=auth)
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["kind"] == "campaign" and run["status"] == "queued", run
        assert client.get(f"/api/v1/campaigns/{cid}").json()["status"] == "queued"
        acted = client.post(f"/api/v1/campaigns/{cid}/{action}", headers=auth)
        assert acted.status_code == 200, acted.text
        assert runner.get(run["id"]).status == "queued"  # still waiting behind the blocker
    finally:
        blocker.release.set()
    assert runner.wait(blocker.run.id, 30).status == "completed"  # not an API run kind
    return acted.json(), _wait_run(client, run["id"])


def _assert_nothing_ran(store, settings, cid: int, status: str, where: str) -> None:
    rec = store.get_campaign(cid)
    assert rec.status == status, (where, rec.status, rec.status_message)
    assert store.list_iterations(cid) == [], where
    assert sum(store.count_labels(cid).values()) == 0, where
    assert store.list_labels(cid, limit=None) == [], where
    assert store.list_models(cid) == [], where
    assert store.get_lease(cid) is None, where
    assert not (settings.data_dir / "labels").exists(), where  # no DFT directory either


@pytest.fixture
def blocked_api(settings, store):
    """The app with a one-thread background runner the tests can block."""
    from api.app import create_app

    runner = Runner(1)
    try:
        with TestClient(create_app(settings, store=store, runner=runner)) as client:
            yield client, runner
    finally:
        runner.shutdown(wait=True)
        from workflows.steps import close_stores

        close_stores()


def test_pause_after_an_accepted_resume_is_honoured_by_the_queued_run(
    blocked_api, store, settings, auth
):
    client, runner = blocked_api
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    for k in range(TRIALS):
        where = f"resume -> pause #{k}"
        paused, run = _queued_then(client, runner, cid, auth, "pause")
        assert paused["status"] == "paused", where
        assert run["status"] == "completed", (where, run)
        assert "not started" in run["message"] and "paused" in run["message"], (where, run)
        assert run["result"]["status"] == "paused", (where, run)
        _assert_nothing_ran(store, settings, cid, "paused", where)
        assert store.get_campaign(cid).status_message == "paused via API"  # no token name
    runs = client.get(f"/api/v1/runs?campaign_id={cid}").json()
    assert len(runs) == TRIALS and all(x["status"] == "completed" for x in runs)


def test_cancel_after_an_accepted_resume_is_honoured_by_the_queued_run(
    blocked_api, store, settings, auth
):
    client, runner = blocked_api
    r = client.post("/api/v1/campaigns", json={"config": tiny_config()}, headers=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    cancelled, run = _queued_then(client, runner, cid, auth, "cancel")
    assert cancelled["status"] == "cancelled"
    assert run["status"] == "completed", run
    assert "not started" in run["message"] and "cancelled" in run["message"], run
    _assert_nothing_ran(store, settings, cid, "cancelled", "resume -> cancel")
    assert store.get_campaign(cid).finished_at is not None
    # cancelled for good: no later run is accepted
    for action in ("resume", "next-iteration", "pause"):
        r = client.post(f"/api/v1/campaigns/{cid}/{action}", headers=auth)
        assert r.status_code == 409 and "cancelled" in r.json()["detail"], (action, r.text)
    assert store.get_campaign(cid).status == "cancelled"
