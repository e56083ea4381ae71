"""Kill -9 a running campaign (its whole process group) during labelling, training and
exploration, resume it each time, and check the database invariants: nothing labelled twice,
no label lost, every selected structure labelled exactly once, one model per iteration."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ._campaigns import write_config

ROOT = Path(__file__).resolve().parents[2]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PESFLOW_"))}
    env.update(
        PESFLOW_DATA_DIR=str(data),
        PREFECT_HOME=str(data / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS="1",
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
    )
    return env


def _start(args: list[str], data: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workflows.cli", *args, "--quiet"],
        cwd=ROOT,
        env=_env(data),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_for(
    proc: subprocess.Popen, cond: Callable[[], bool], what: str, log: Path, timeout: float = 240.0
) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():
                return
        except Exception:  # the database or campaign may not exist yet
            pass
        if proc.poll() is not None:
            pytest.fail(
                f"campaign exited ({proc.returncode}) before {what}:\n" + log.read_text()[-3000:]
            )
        time.sleep(0.1)
    _kill_group(proc)
    pytest.fail(f"timed out waiting for {what}:\n" + log.read_text()[-3000:])


def _done_labels(store, cid) -> dict[int, tuple]:
    return {
        lb.id: (lb.structure_id, lb.finished_at, lb.energy)
        for lb in store.list_labels(cid, status="done", limit=None)
    }


def test_kill_during_label_train_explore_then_resume(tmp_path: Path):
    from database import Store

    data = tmp_path / "data"
    log = tmp_path / "campaign.log"
    cfg = write_config(
        tmp_path / "kill.yaml",
        name="killme",
        labeler={"name": "emt", "faults": {"fraction": 0.0, "delay": 0.25}},
        convergence={"accurate_ratio": 0.999, "patience": 1, "max_iterations": 2},
        training={"max_epochs": 80, "max_time_s": 8, "warm_start_epochs": 20},
        exploration={
            "walkers": [
                {"temperature": t, "steps": 150, "timestep": 2.0, "record_every": 10}
                for t in (300, 800, 1200)
            ]
        },
    )
    store = None

    def st():
        nonlocal store
        if store is None:
            store = Store.sqlite(data)
        return store

    def cid() -> int:
        return st().get_campaign("killme").id

    # 1. kill while the bootstrap/validation labels are being computed
    proc = _start(["run", str(cfg)], data, log)
    _wait_for(
        proc,
        lambda: st().count_labels(cid())["done"] >= 3 and st().count_labels(cid())["running"] > 0,
        "labelling",
        log,
    )
    _kill_group(proc)
    counts = st().count_labels(cid())
    assert counts["running"] > 0 and counts["done"] >= 3
    before = _done_labels(st(), cid())

    # 2. resume; kill while the first committee trains (labels done, no model yet)
    proc = _start(["resume", "killme"], data, log)

    def training() -> bool:
        c = st().count_labels(cid())
        return (
            c["pending"] == 0
            and c["running"] == 0
            and c["done"] > 0
            and not st().list_models(cid())
        )

    _wait_for(proc, training, "training", log)
    time.sleep(0.5)
    _kill_group(proc)
    assert not st().list_models(cid()), "training finished before the kill"
    after = _done_labels(st(), cid())
    assert all(after[i] == before[i] for i in before), "a done label was recomputed or lost"
    before = after

    # 3. resume; kill in the middle of exploration (a model exists, walkers not all done)
    proc = _start(["resume", "killme"], data, log)

    def exploring() -> bool:
        it = st().latest_iteration(cid())
        walkers = [k for k in it.validation if k.startswith("walker:")]
        return bool(st().list_models(cid())) and 1 <= len(walkers) < 3

    _wait_for(proc, exploring, "exploration", log)
    _kill_group(proc)
    it0 = st().get_iteration(cid(), 0)
    assert "explore" not in it0.step_timings
    after = _done_labels(st(), cid())
    assert all(after[i] == before[i] for i in before)
    before = after

    # 4. resume to the end
    proc = _start(["resume", "killme"], data, log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]

    s, c = st(), cid()
    rec = s.get_campaign(c)
    assert rec.status in ("converged", "paused"), rec.status_message
    labels = s.list_labels(c, limit=None)
    sids = [lb.structure_id for lb in labels]
    selected = {x.structure_id for x in s.list_selections(c)}
    assert len(sids) == len(set(sids)) == len(selected)  # one label per selected structure
    assert all(lb.status == "done" for lb in labels)  # the killed running ones were retried
    after = _done_labels(s, c)
    assert all(after[i] == before[i] for i in before)  # never recomputed, never lost
    assert any(lb.attempts >= 2 for lb in labels)  # the requeued ones ran again
    its = s.list_iterations(c)
    assert [i.status for i in its] == ["done"] * len(its)
    models = s.list_models(c)
    assert sorted(m.iteration_id for m in models) == sorted(i.id for i in its)
    assert its[0].n_explored > 0 and all(f"walker:{k}" in its[0].validation for k in range(3))
    s.close()
