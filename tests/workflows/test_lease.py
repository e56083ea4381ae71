"""workflows.lease: refusal naming the holder, waiting, takeover of a dead holder, heartbeat,
fencing, and the status a run ends with on every kind of exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from database import LeaseHeldError, LeaseLostError, Store
from workflows import lease
from workflows.context import CampaignFailedError


@pytest.fixture
def store(tmp_path):
    s = Store.sqlite(tmp_path)
    yield s
    s.close()


def _campaign(store, name="c"):
    return store.create_campaign(name).id


def test_a_held_campaign_is_refused_naming_the_holder(store):
    cid = _campaign(store)
    store.acquire_lease(cid, token="other", host="node3", pid=77, purpose="pesflow run", ttl_s=60)
    held = r"held by node3 pid 77 \(pesflow run\) since"
    with pytest.raises(LeaseHeldError, match=held), lease.hold(store, cid, purpose="resume"):
        pass
    assert store.get_lease(cid).token == "other"  # untouched


def test_wait_for_a_holder_to_finish(store):
    cid = _campaign(store)
    store.acquire_lease(cid, token="other", host="node3", pid=77, purpose="api run", ttl_s=60)
    threading.Timer(
        0.5, store.release_lease, args=(cid, "other"), kwargs={"status": "paused"}
    ).start()
    t0 = time.monotonic()
    with lease.hold(store, cid, purpose="pesflow resume", ttl_s=5, wait_s=10) as held:
        assert store.get_campaign(cid).lease.token == held.token
        held.finish("paused", "done waiting")
    assert 0.4 < time.monotonic() - t0 < 8
    assert store.get_campaign(cid).status == "paused"


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store):
    cid = _campaign(store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    boot, ns, _ = lease.process_identity().split("/", 2)
    store.acquire_lease(
        cid,
        token="dead",
        host=socket.gethostname(),
        pid=dead.pid,
        process=f"{boot}/{ns}/1",  # this machine, this pid namespace, a process now gone
        purpose="pesflow run",
        ttl_s=600,
    )
    with lease.hold(store, cid, purpose="pesflow resume") as held:
        rec = store.get_campaign(cid)
        assert rec.lease.token == held.token and rec.lease.pid == os.getpid()
        held.finish("paused", "ok")


def test_heartbeat_keeps_the_lease_and_a_lost_lease_stops_the_run(store):
    cid = _campaign(store)
    with lease.hold(store, cid, purpose="test", ttl_s=0.8) as held:
        first = store.get_lease(cid).expires_at
        time.sleep(1.0)  # longer than the ttl: only the heartbeat keeps it alive
        assert store.get_lease(cid).alive and store.get_lease(cid).expires_at > first
        held.check()
        # another process takes over (e.g. this one was suspended past its expiry)
        store.acquire_lease(
            cid, token="new", host="node9", pid=1, purpose="x", ttl_s=60, take_over=held.token
        )
        time.sleep(0.6)
        with pytest.raises(LeaseLostError, match=r"no longer holds .*node9 pid 1"):
            held.check()
        held.finish("converged", "must not be applied")
    rec = store.get_campaign(cid)
    assert rec.status == "running" and rec.lease.token == "new"  # the new holder's, untouched


@pytest.mark.parametrize(
    ("exc", "status", "words"),
    [
        (CampaignFailedError("iteration 2: 9/10 labels failed"), "failed", "9/10 labels failed"),
        (RuntimeError("boom"), "interrupted", "RuntimeError: boom"),
        (KeyboardInterrupt(), "interrupted", "interrupted by the user"),
    ],
)
def test_a_run_that_raises_never_stays_running(store, exc, status, words):
    cid = _campaign(store, f"c-{status}-{type(exc).__name__}")
    with pytest.raises(type(exc)), lease.hold(store, cid, purpose="test"):
        raise exc
    rec = store.get_campaign(cid)
    assert rec.status == status and words in rec.status_message and rec.lease is None


def test_leases_are_reentrant_in_one_process(store):
    cid = _campaign(store)
    with (
        lease.hold(store, cid, purpose="outer") as outer,
        lease.hold(store, cid, purpose="inner") as inner,
    ):
        assert inner is outer and lease.current(cid) is outer
        inner.finish("paused", "from the inner block")
    assert lease.current(cid) is None
    assert store.get_campaign(cid).status_message == "from the inner block"


def test_only_a_provably_dead_holder_of_this_machine_is_gone(store):
    from database import LeaseRecord

    me = lease.process_identity()
    assert me is not None and me.count("/") >= 2

    def lease_of(pid: int, process: str | None, host: str | None = None) -> LeaseRecord:
        now = time.time()
        from datetime import UTC, datetime

        t = datetime.fromtimestamp(now, UTC)
        host = host or socket.gethostname()
        return LeaseRecord(1, "t", host, pid, "run", t, t, t, True, process)

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    boot, ns, _ = me.split("/", 2)
    assert lease.holder_is_gone(lease_of(dead.pid, f"{boot}/{ns}/123"))  # no such process
    assert lease.holder_is_gone(lease_of(os.getppid(), f"{boot}/{ns}/1"))  # pid reused since
    assert not lease.holder_is_gone(lease_of(os.getpid(), me))  # alive
    # another pid namespace (a container), another boot, another host: judged by expiry only
    assert not lease.holder_is_gone(lease_of(dead.pid, f"{boot}/pid:[1]/123"))
    assert not lease.holder_is_gone(lease_of(dead.pid, f"other-boot/{ns}/123"))
    assert not lease.holder_is_gone(lease_of(dead.pid, f"{boot}/{ns}/123", host="elsewhere"))
    assert not lease.holder_is_gone(lease_of(dead.pid, None))


def test_a_heartbeat_outage_does_not_end_a_run_that_nobody_took_over(store, monkeypatch):
    cid = _campaign(store)
    real = store.renew_lease
    down = {"on": True}

    def flaky(*args, **kwargs):
        if down["on"]:
            raise RuntimeError("database unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "renew_lease", flaky)
    with lease.hold(store, cid, purpose="test", ttl_s=0.4) as held:
        time.sleep(1.0)  # beats fail for longer than the ttl
        assert not held.lost.is_set()
        down["on"] = False
        held.check()  # nobody took it over: renewed, the run goes on
        assert store.get_lease(cid).alive
        held.finish("paused", "ok")


def test_sigterm_ends_the_run_interrupted_and_gives_the_lease_back(store):
    import signal

    cid = _campaign(store)
    with (
        pytest.raises(lease.Terminated),
        lease.terminate_on_sigterm(),
        lease.hold(store, cid, purpose="test"),
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the signal
    rec = store.get_campaign(cid)
    assert rec.status == "interrupted" and "SIGTERM" in rec.status_message and rec.lease is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back
