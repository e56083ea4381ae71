"""A real SLURM cluster (slurm-wlm + munge, single node: this machine) under the campaign:

- the cluster itself starts, runs a batch job, and leaves nothing behind when stopped;
- a campaign whose walkers and labels run in Dask workers of SLURM batch jobs, configured as
  docs/cluster.md tells users (``SLURMCluster``, adaptive 0 → 2 jobs), on compute "nodes"
  that have no route to the Prefect API;
- pw.x launched by ``srun`` from the labeler's launcher, inside a worker's batch job;
- ``scancel`` of a worker job in the middle of labelling: nothing lost, only the killed
  calculations redone.

Oracle calls and the tasks each worker executed are counted by instrumentation in the
workers (:mod:`tests.cluster._probe`), not from pesflow's database.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dask
import pytest
import yaml

from benchmarks._slurm import SlurmCluster, single_node_slurm

from . import _probe
from ._campaign import tiny
from ._slurm_run import label_batch, slurm_execution
from .conftest import require_slurm


@pytest.fixture(autouse=True)
def _probe_labeler():
    """The ``emt_probe`` oracle is known in this process during each test only."""
    from dft_adapters.testing import registered

    with registered(_probe.ProbeEMTLabeler):
        yield


def _wait_queue_empty(cluster: SlurmCluster, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while (jobs := cluster.jobs()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return jobs


def _setup(tmp: Path, config: dict[str, Any]) -> Any:
    """The campaign of ``config`` (written as YAML and loaded as ``pesflow run`` loads it) on
    SQLite in ``tmp/data``."""
    from database import sqlite_url
    from workflows.config import load_config
    from workflows.steps import open_store, setup_campaign

    path = tmp / "campaign.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cfg = load_config(path)
    data = tmp / "data"
    data.mkdir()
    return cfg, setup_campaign(open_store(sqlite_url(data)), cfg, data)


def _done_labels(handle: Any) -> list:
    from workflows.steps import open_store

    store = open_store(handle.db_url)
    return [lb for lb in store.list_labels(handle.campaign_id, limit=None) if lb.status == "done"]


def _fingerprints(handle: Any, labels: list) -> list[str]:
    from dft_adapters.mock import structure_fingerprint
    from workflows.steps import open_store

    atoms = open_store(handle.db_url).get_atoms([lb.structure_id for lb in labels])
    return [structure_fingerprint(a) for a in atoms]


def test_missing_slurm_skips_here_and_fails_in_ci(monkeypatch, tmp_path: Path) -> None:
    from benchmarks._slurm import missing

    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, squeue, sbatch, srun, scancel
    assert "sinfo" in missing() and "apt-get install slurm-wlm munge" in missing()
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_slurm()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the SLURM tests"):
        require_slurm()


def test_cluster_runs_a_job_and_leaves_nothing_behind(tmp_path: Path) -> None:
    require_slurm()
    marker = tmp_path / "job.pid"
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\necho $$ > {marker}\nexec sleep 300\n")
    with single_node_slurm(tmp_path / "slurm") as cluster:
        assert cluster.node_state() == "idle"
        submitted = cluster.command("sbatch", "-o", str(tmp_path / "out"), str(script))
        assert submitted.returncode == 0, submitted.stderr
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        job_pid = int(marker.read_text())
        assert [j.state for j in cluster.jobs()] == ["RUNNING"]
        assert job_pid in cluster.job_processes()
        daemons = {name: proc.pid for name, proc in cluster.daemons.items()}
    # stopped: the job was cancelled, its process and every daemon started here are gone
    assert {"slurmctld", "slurmd"} <= set(daemons)
    assert cluster.leftovers() == {}
    for pid in [job_pid, *daemons.values()]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), pid


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_campaign_runs_walkers_and_labels_in_slurm_jobs_without_a_route_to_prefect(
    slurm: SlurmCluster, prefect_harness, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL

    from workflows import lease
    from workflows.flows import run_flow

    api = urlsplit(PREFECT_API_URL.value())
    refused = tmp_path / "refused.log"
    execution = slurm_execution(
        tmp_path,
        preload=("tests.cluster._probe", "tests.cluster._no_route"),
        # test only: the workers' connections to the Prefect API are refused
        exports={
            "PESFLOW_TEST_NO_ROUTE": f"{api.hostname}:{api.port}",
            "PESFLOW_TEST_NO_ROUTE_LOG": str(refused),
        },
    )
    cfg, handle = _setup(
        tmp_path,
        tiny(
            execution=execution,
            labeler={"name": "emt_probe", "settings": {"delay": 1.0}},
            convergence={"max_iterations": 1},
        ),
    )
    t0 = time.monotonic()
    with slurm.watch() as queue, lease.hold(_store(handle), handle.campaign_id, purpose="test"):
        result = run_flow(handle, cfg.execution)
    wall = time.monotonic() - t0
    assert result["status"] in ("paused", "converged"), result
    left = _wait_queue_empty(slurm)
    assert left == [], f"jobs left after the flow: {left}"

    events = _probe.read_events(tmp_path / "events.jsonl")
    jobs = {j.id for j in queue.jobs.values() if j.name == "dask-worker"}
    assert jobs and set(queue.jobs) == jobs  # every job was a Dask worker job ...
    assert queue.peak_running == 2  # ... and adaptive scaling ran two at once, never more
    assert queue.peak <= 2
    # every task ran in a Dask worker of one of those batch jobs
    tasks = [e for e in events if e["event"] == "task"]
    by_kind = Counter(e["key"].rsplit("-", 5)[0] for e in tasks)
    assert {e["job"] for e in tasks} <= jobs and all(e["job"] for e in tasks)
    n_walkers = sum(w.count for w in cfg.exploration.walkers)
    assert by_kind["explore-walker"] == n_walkers
    # each stored label was computed exactly once, in a batch job
    labels = _done_labels(handle)
    finished = [e for e in events if e["event"] == "finish"]
    assert by_kind["label"] == len(labels) == len(finished) >= 7 + 1
    assert Counter(e["structure"] for e in finished) == Counter(_fingerprints(handle, labels))
    assert {e["job"] for e in finished} <= jobs
    # the workers did try the Prefect API, were refused, said so once each, and worked on
    refusals = refused.read_text().split() if refused.exists() else []
    workers = {e["pid"] for e in tasks}
    assert workers <= {int(pid) for pid in refusals[::2]}
    errs = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*.err"))
    assert errs.count("is not reachable from this Dask worker") == len(workers)
    print(f"campaign through SLURM: {wall:.1f} s, jobs {sorted(jobs, key=int)}")


def _store(handle: Any) -> Any:
    from workflows.steps import open_store

    return open_store(handle.db_url)


def test_scancel_of_a_worker_job_mid_labelling_redoes_only_the_killed_calculations(
    slurm: SlurmCluster, prefect_harness, tmp_path: Path
) -> None:
    n = 12
    events_path = tmp_path / "events.jsonl"
    execution = slurm_execution(tmp_path, cores=2)  # 2 labels at a time per job
    _, handle = _setup(
        tmp_path,
        tiny(execution=execution, labeler={"name": "emt_probe", "settings": {"delay": 2.0}}),
    )
    killed: dict[str, Any] = {}
    stop = threading.Event()

    def cancel_first_job() -> None:
        """Once the first job has finished a label and holds two more, scancel it."""
        while not stop.wait(0.05):
            events = _probe.read_events(events_path)
            starts = [e for e in events if e["event"] == "start"]
            if not starts:
                continue
            job = starts[0]["job"]
            mine = [e for e in events if e["job"] == job]
            done = {e["structure"] for e in mine if e["event"] == "finish"}
            running = {e["structure"] for e in mine if e["event"] == "start"} - done
            if done and len(running) == 2:
                res = slurm.command("scancel", job)
                killed.update(job=job, running=running, done=done, t=time.time(), rc=res)
                return

    watcher = threading.Thread(target=cancel_first_job, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:  # a lost job is replaced after lost-worker-timeout (default 15 s: longer than this)
        with slurm.watch() as queue, dask.config.set({"distributed.deploy.lost-worker-timeout": 2}):
            result = label_batch(handle, n)
    finally:
        stop.set()
        watcher.join(10)
    wall = time.monotonic() - t0
    assert killed, "the first job was never cancelled"
    assert killed["rc"].returncode == 0, killed["rc"].stderr
    assert result.done == n and result.failed == 0 and result.complete
    assert _wait_queue_empty(slurm) == []

    events = _probe.read_events(events_path)
    starts = Counter(e["structure"] for e in events if e["event"] == "start")
    finishes = Counter(e["structure"] for e in events if e["event"] == "finish")
    labels = _done_labels(handle)
    assert sorted(finishes) == sorted(_fingerprints(handle, labels))
    assert set(finishes.values()) == {1}  # every label computed to the end exactly once
    # the two calculations the cancel killed were started again, in another job; nothing else
    redone = {s for s, k in starts.items() if k == 2}
    assert redone == killed["running"] and set(starts.values()) <= {1, 2}
    for structure in redone:
        where = [e["job"] for e in events if e["event"] == "start" and e["structure"] == structure]
        assert where[0] == killed["job"] != where[1]
    # the labels the job had finished before it was cancelled were not redone
    assert all(starts[s] == 1 for s in killed["done"])
    # the cancelled job did nothing after its cancel
    late = [e for e in events if e["job"] == killed["job"] and e["t"] > killed["t"] + 1.0]
    assert late == []
    # adaptive scaling brought a new job up in place of the cancelled one
    assert len(queue.jobs) >= 3, queue.jobs
    print(f"scancel mid-labelling: {wall:.1f} s, jobs {sorted(queue.jobs, key=int)}")


QE_FAST = {"ecutwfc": 20, "kpts": [3, 3, 3], "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}


def _require_srun_pmix(slurm: SlurmCluster) -> None:
    """srun's PMIx plugin needs the PMIx library (Debian: libpmix-dev); Open MPI's pw.x cannot
    start under srun without it."""
    from .._codes import in_ci

    res = slurm.command("srun", "--mpi=pmix", "-n", "1", "true", timeout=60)
    if res.returncode == 0:
        return
    reason = f"srun --mpi=pmix fails ({res.stderr.strip()[-200:]}): apt-get install libpmix-dev"
    if in_ci():
        pytest.fail(f"{reason} — CI must run the srun test (.ci/run installs it)")
    pytest.skip(reason)


def test_pw_x_runs_as_an_mpi_step_of_the_worker_job_through_srun(
    slurm: SlurmCluster, prefect_harness, tmp_path: Path
) -> None:
    """The labeler's launcher (``labelers.espresso.launcher: srun --mpi=pmix -n 2`` in the
    execution section) starts pw.x as a 2-rank MPI job step inside the Dask worker's batch
    job (which books 2 CPUs for its 1 worker thread)."""
    import numpy as np

    from dft_adapters import get_labeler
    from workflows.steps import open_store

    from .._codes import QE_PSEUDO_DIR, require_pw_x

    require_pw_x()
    _require_srun_pmix(slurm)
    steps_log = tmp_path / "steps.log"
    step_env = tmp_path / "step-env"  # test only: records the step's rank, then runs the code
    step_env.write_text(
        "#!/bin/sh\n"
        f'echo "$SLURM_JOB_ID $SLURM_STEP_ID $SLURM_PROCID $1" >> {steps_log}\n'
        'exec "$@"\n'
    )
    step_env.chmod(0o755)
    execution = slurm_execution(
        tmp_path,
        maximum_jobs=1,
        job_cpu=2,
        labelers={
            "espresso": {
                "launcher": f"srun --mpi=pmix -n 2 {step_env}",
                "env": {"OMP_NUM_THREADS": "1"},
                "settings": {"pseudo_dir": str(QE_PSEUDO_DIR)},
            }
        },
    )
    structure = {"element": "Si", "crystal": "diamond", "lattice_constant": 5.43}
    structure.update(cubic=False, repeat=[1, 1, 1])  # Si2
    _, handle = _setup(
        tmp_path,
        tiny(
            structures=[{"generate": structure}],
            labeler={"name": "espresso", "settings": QE_FAST},
            execution=execution,
        ),
    )
    t0 = time.monotonic()
    with slurm.watch() as queue:
        result = label_batch(handle, 2)
    wall = time.monotonic() - t0
    assert result.done == 2 and result.failed == 0
    assert _wait_queue_empty(slurm) == []
    jobs = set(queue.jobs)
    assert len(jobs) == 1
    # each calculation was a job step (srun) of the worker's batch job: pw.x on ranks 0 and 1
    rows = sorted(tuple(line.split()) for line in steps_log.read_text().splitlines())
    (job,) = jobs
    assert rows == [(job, step, rank, "pw.x") for step in "01" for rank in "01"]
    store = open_store(handle.db_url)
    labels = _done_labels(handle)
    for label in labels:
        out = (tmp_path / "data" / "labels" / str(label.id)).rglob("*.pwo")
        assert any("running on     2 processors" in p.read_text() for p in out)
    # and the labels are pw.x's answer: the same calculation run here, serially, without SLURM
    # (2 ranks vs 1 differ in the last digits: summation order)
    for label in labels:
        atoms = store.get_atoms([label.structure_id])[0]
        assert len(atoms) == 2
        direct = get_labeler("espresso", pseudo_dir=str(QE_PSEUDO_DIR), **QE_FAST).label(
            atoms, workdir=tmp_path / f"direct-{label.id}"
        )
        assert direct.ok
        assert label.energy == pytest.approx(direct.energy, abs=1e-5)
        np.testing.assert_allclose(label.forces, direct.forces, atol=1e-4)
    print(f"pw.x under srun: {wall:.1f} s, job {job}")
