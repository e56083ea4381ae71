"""Task runners from the campaign config: thread pool, Dask LocalCluster, scheduler address,
SLURM/PBS (dask-jobqueue) with adaptive scaling; the SLURM/PBS job scripts; and a campaign on
a 2-worker Dask LocalCluster that labels exactly what the thread pool labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workflows.cluster import (
    ClusterConfigError,
    concurrency,
    describe,
    label_slots,
    make_task_runner,
    render_job_script,
    task_runner_kwargs,
)
from workflows.config import ConfigError, ExecutionConfig, parse_config
from workflows.dask_runner import PesflowDaskTaskRunner

from ._campaign import tiny

SLURM = {
    "task_runner": "dask",
    "dask": {
        "cluster_class": "slurm",
        "cluster_kwargs": {
            "partition": "compute",
            "cores": 32,
            "processes": 4,
            "memory": "120GB",
            "walltime": "04:00:00",
            "account": "mat123",
            "job_script_prologue": [
                "module load vasp/6.4",
                "source /opt/pesflow/bin/activate",
                "export OMP_NUM_THREADS=1",
            ],
        },
        "adapt_kwargs": {"minimum_jobs": 0, "maximum_jobs": 8},
    },
}


def _ex(data: dict) -> ExecutionConfig:
    return ExecutionConfig.model_validate(data)


def test_threads_runner() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = make_task_runner(_ex({"task_runner": "threads", "max_workers": 3}))
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == 3
    assert describe(_ex({"max_workers": 3})) == "threads: 3 worker thread(s)"


def test_dask_local_default_and_explicit() -> None:
    from prefect_dask import DaskTaskRunner

    kw = task_runner_kwargs(_ex({"task_runner": "dask", "max_workers": 2}))
    assert kw == {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    }
    ex = _ex(
        {
            "task_runner": "dask",
            "dask": {
                "cluster_class": "local",
                "cluster_kwargs": {"n_workers": 2, "threads_per_worker": 4},
            },
        }
    )
    runner = make_task_runner(ex)
    assert isinstance(runner, DaskTaskRunner) and isinstance(runner, PesflowDaskTaskRunner)
    assert runner.cluster_kwargs["threads_per_worker"] == 4
    assert describe(ex) == "dask: distributed.LocalCluster (2 workers)"


def test_dask_address() -> None:
    ex = _ex({"task_runner": "dask", "dask": {"address": "tcp://10.1.2.3:8786"}})
    assert task_runner_kwargs(ex) == {"address": "tcp://10.1.2.3:8786"}
    assert make_task_runner(ex).address == "tcp://10.1.2.3:8786"
    assert describe(ex) == "dask: scheduler at tcp://10.1.2.3:8786"
    both = _ex({"task_runner": "dask", "dask": {"address": "tcp://x:1", "cluster_class": "slurm"}})
    with pytest.raises(ClusterConfigError, match="either 'address'"):
        task_runner_kwargs(both)


def test_slurm_runner_kwargs_and_adapt() -> None:
    kw = task_runner_kwargs(_ex(SLURM))
    assert kw["cluster_class"] == "dask_jobqueue.SLURMCluster"
    assert kw["cluster_kwargs"]["queue"] == "compute"  # 'partition' accepted as SLURM's word
    assert "partition" not in kw["cluster_kwargs"]
    assert kw["adapt_kwargs"] == {"minimum_jobs": 0, "maximum_jobs": 8}
    runner = make_task_runner(_ex(SLURM))  # builds nothing until a flow uses it
    assert runner.adapt_kwargs == {"minimum_jobs": 0, "maximum_jobs": 8}
    assert describe(_ex(SLURM)) == "dask: dask_jobqueue.SLURMCluster (adaptive 0-8 jobs)"


def test_slurm_job_script() -> None:
    script = render_job_script(_ex(SLURM), scheduler_address="tcp://10.0.0.1:8786")
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for directive in (
        "#SBATCH -p compute",
        "#SBATCH -t 04:00:00",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH -A mat123",
    ):
        assert directive in lines, (directive, script)
    mem = [ln for ln in lines if ln.startswith("#SBATCH --mem=")]
    assert len(mem) == 1 and mem[0].endswith("G")
    assert int(mem[0].split("=")[1][:-1]) == pytest.approx(120e9 / 2**30, abs=1)
    prologue = [
        "module load vasp/6.4",
        "source /opt/pesflow/bin/activate",
        "export OMP_NUM_THREADS=1",
    ]
    start = lines.index(prologue[0])
    assert lines[start : start + 3] == prologue
    worker = lines[start + 3]
    assert "distributed.cli.dask_worker tcp://10.0.0.1:8786" in worker
    assert "--nworkers 4" in worker and "--nthreads 8" in worker
    # the prologue runs after every #SBATCH line and before the worker starts
    assert max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")) < start


def test_pbs_job_script() -> None:
    ex = _ex(
        {
            "task_runner": "dask",
            "dask": {
                "cluster_class": "pbs",
                "cluster_kwargs": {
                    "queue": "workq",
                    "cores": 8,
                    "processes": 1,
                    "memory": "16GB",
                    "walltime": "01:30:00",
                    "resource_spec": "select=1:ncpus=8:mem=16GB",
                    "job_script_prologue": ["module load cp2k"],
                },
            },
        }
    )
    script = render_job_script(ex)
    assert "#PBS -q workq" in script and "#PBS -l walltime=01:30:00" in script
    assert "#PBS -l select=1:ncpus=8:mem=16GB" in script and "module load cp2k" in script


def test_bad_cluster_config_is_one_line() -> None:
    ex = _ex(
        {
            "task_runner": "dask",
            "dask": {
                "cluster_class": "slurm",
                "cluster_kwargs": {"cores": 4, "memory": "8GB", "walltme": "01:00:00"},
            },
        }
    )
    with pytest.raises(ClusterConfigError, match=r"'walltme'.*did you mean 'walltime'"):
        task_runner_kwargs(ex)
    with pytest.raises(ClusterConfigError, match="cannot import"):
        task_runner_kwargs(
            _ex({"task_runner": "dask", "dask": {"cluster_class": "nope.NoCluster"}})
        )
    with pytest.raises(ClusterConfigError, match="submits no batch jobs"):
        render_job_script(_ex({"task_runner": "dask", "max_workers": 1}))


def _labels_by_structure(db_url: str, campaign: str) -> dict[str, tuple[float, np.ndarray]]:
    from workflows.steps import open_store

    store = open_store(db_url)
    rec = store.get_campaign(campaign)
    out = {}
    labels = [lb for lb in store.list_labels(rec.id, limit=None) if lb.status == "done"]
    structs = {s.id: s for s in store.get_structures([lb.structure_id for lb in labels])}
    for lb in labels:
        out[structs[lb.structure_id].hash] = (lb.energy, lb.forces)
    return out


def _run(tmp: Path, execution: dict) -> dict[str, tuple[float, np.ndarray]]:
    from database import sqlite_url
    from workflows import lease
    from workflows.cluster import make_task_runner as mk
    from workflows.flows import campaign_flow
    from workflows.steps import open_store, setup_campaign

    tmp.mkdir()
    cfg = parse_config(tiny(execution=execution, convergence={"max_iterations": 2}))
    url = sqlite_url(tmp)
    store = open_store(url)
    handle = setup_campaign(store, cfg, tmp)
    with lease.hold(store, handle.campaign_id, purpose="test"):
        campaign_flow.with_options(task_runner=mk(cfg.execution))(handle)
    return _labels_by_structure(url, cfg.name)


def test_dask_local_cluster_labels_equal_thread_pool(tmp_path: Path, prefect_harness) -> None:
    threads = _run(tmp_path / "threads", {"task_runner": "threads", "max_workers": 2})
    dask = _run(
        tmp_path / "dask",
        {
            "task_runner": "dask",
            "dask": {
                "cluster_class": "local",
                "cluster_kwargs": {"n_workers": 2, "threads_per_worker": 1},
            },
        },
    )
    assert len(threads) >= 7 + 3  # bootstrap + validation + candidates of >= 1 iteration
    assert set(dask) == set(threads)
    for key, (energy, forces) in threads.items():
        assert dask[key][0] == pytest.approx(energy, abs=1e-9)
        np.testing.assert_allclose(dask[key][1], forces, atol=1e-9)


def test_label_slots_follow_the_runner_concurrency() -> None:
    threads = _ex({"task_runner": "threads", "max_workers": 3})
    assert concurrency(threads) == 3 and label_slots(threads) == 6
    local = _ex(
        {
            "task_runner": "dask",
            "dask": {"cluster_kwargs": {"n_workers": 2, "threads_per_worker": 4}},
        }
    )
    assert concurrency(local) == 8 and label_slots(local) == 16
    assert concurrency(_ex({"task_runner": "dask", "max_workers": 2})) == 2
    # a jobqueue cluster: worker threads, the job's cores (4 workers x 8 threads), x 8 jobs
    assert concurrency(_ex(SLURM)) == 8 * 32 and label_slots(_ex(SLURM)) == 2 * 8 * 32
    mpi = {**SLURM["dask"], "cluster_kwargs": {"cores": 1, "job_cpu": 32, "memory": "8GB"}}
    assert concurrency(_ex({"task_runner": "dask", "dask": mpi})) == 8  # 1 label per job
    fixed = {"cluster_class": "slurm", "cluster_kwargs": {"cores": 8, "processes": 2}}
    assert (
        concurrency(_ex({"task_runner": "dask", "dask": {**fixed, "adapt_kwargs": None}})) is None
    )
    fixed["cluster_kwargs"]["n_workers"] = 3  # 3 workers of 4 threads
    assert concurrency(_ex({"task_runner": "dask", "dask": fixed})) == 12
    address = _ex({"task_runner": "dask", "dask": {"address": "tcp://10.1.2.3:8786"}})
    assert concurrency(address) is None and label_slots(address) == 16
    fixed = _ex({"task_runner": "dask", "dask": {"address": "tcp://x:1"}, "label_slots": 40})
    assert label_slots(fixed) == 40
    with pytest.raises(ConfigError, match="label_slots"):
        parse_config(tiny(execution={"label_slots": 0}))
