"""What the SLURM tests run: the ``execution`` section docs/cluster.md tells users to write
(Dask ``SLURMCluster``, adaptive 0 → N jobs), and a batch of labels sent through the campaign's
real label step (:func:`workflows.label.label_step`) on that cluster.

Test-only additions to the documented section are marked: ``PYTHONPATH`` and ``--preload`` so
that the batch jobs' Dask workers import the instrumented oracle (:mod:`tests.cluster._probe`)
or the blocked route (:mod:`tests.cluster._no_route`), and the event file's name.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from . import _probe

__all__ = ["ROOT", "label_batch", "request_labels", "slurm_execution"]

ROOT = Path(__file__).resolve().parents[2]


def slurm_execution(
    tmp: Path,
    *,
    maximum_jobs: int = 2,
    cores: int = 1,
    job_cpu: int | None = None,
    preload: tuple[str, ...] = ("tests.cluster._probe",),
    exports: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``execution`` section of docs/cluster.md for this machine's single-node SLURM:
    batch jobs of one Dask worker (``processes: 1``) with ``cores`` threads, booking
    ``job_cpu`` CPUs (default: ``cores``, but one when the threads only wait for sleeping
    mock labels), the venv activated by ``job_script_prologue``, job logs in ``tmp/jobs``."""
    venv = Path(sys.executable).parent
    prologue = [f"source {venv}/activate"]
    # test only: the instrumented oracle must be importable by the workers, and told where
    # to write its events
    prologue.append(f"export PYTHONPATH={ROOT}")
    env = {_probe.ENV: str(tmp / "events.jsonl"), **(exports or {})}
    prologue += [f"export {k}={v}" for k, v in env.items()]
    worker_args = [arg for module in preload for arg in ("--preload", module)]
    section: dict[str, Any] = {
        "task_runner": "dask",
        "dask": {
            "cluster_class": "slurm",
            "cluster_kwargs": {
                "partition": "debug",
                "cores": cores,
                "processes": 1,
                "memory": "1GB",
                "walltime": "00:10:00",
                "log_directory": str(tmp / "jobs"),
                "job_script_prologue": prologue,
                "worker_extra_args": worker_args,  # test only: the --preload modules
            },
            "adapt_kwargs": {"minimum_jobs": 0, "maximum_jobs": maximum_jobs},
        },
    }
    if job_cpu is None and cores > 1:
        job_cpu = 1  # threads beyond the CPUs booked: the mock labels only sleep
    if job_cpu is not None:
        section["dask"]["cluster_kwargs"]["job_cpu"] = job_cpu
    section.update(extra)
    return section


def request_labels(ctx: Any, iteration: Any, n: int, seed: int) -> list[int]:
    """``n`` new rattled copies of the campaign's first structure, selected and requested for
    labelling in ``iteration``; returns their structure ids."""
    import numpy as np

    from database import SelectionInput

    rng = np.random.default_rng(seed)
    atoms = []
    for _ in range(n):
        a = ctx.initial[0].copy()
        a.positions = a.positions + rng.normal(0.0, 0.05, a.positions.shape)
        atoms.append(a)
    store = ctx.store
    sids = store.add_structures(
        atoms, campaign=ctx.campaign_id, iteration_id=iteration.id, source="test"
    )
    store.record_selections(
        ctx.campaign_id, [SelectionInput(i, reason="test") for i in sids], iteration_id=iteration.id
    )
    store.request_labels(
        ctx.campaign_id,
        sids,
        labeler=ctx.labeler_name,
        settings_hash=ctx.settings_hash,
        settings=dict(ctx.cfg.labeler.settings),
        iteration_id=iteration.id,
    )
    return sids


def label_batch(handle: Any, n: int, *, seed: int = 0) -> Any:
    """Request ``n`` labels and run the label step on them in a flow whose task runner is the
    campaign's (``make_task_runner``), under the campaign's lease; returns the
    :class:`~workflows.label.LabelResult`."""
    from prefect import flow

    from workflows import lease, steps
    from workflows.cluster import label_slots, make_task_runner
    from workflows.flows import PrefectEngine

    # (the flow's closure holds only picklable values: Dask ships the flow run's context)
    @flow(name="slurm-label-batch", validate_parameters=False)
    def batch() -> Any:
        ctx = steps.open_context(handle)
        it = ctx.store.start_iteration(ctx.campaign_id, 0)
        request_labels(ctx, it, n, seed)
        return steps.label_step(handle, it.id, PrefectEngine(label_slots(ctx.cfg.execution)))

    ctx = steps.open_context(handle)
    with lease.hold(ctx.store, handle.campaign_id, purpose="test"):
        return batch.with_options(task_runner=make_task_runner(ctx.cfg.execution))()
