"""Label throughput through the task runners (``python -m benchmarks.cluster``).

The mock labeler (EMT) sleeps ``--delay`` s (default 2) per label. Each round sends ``--labels``
(16) labels through the campaign's real label step (:func:`workflows.steps.label_step`). The
step claims labels from the database, submits one Prefect task per label and stores the
results. The runners run ``--slots`` (8) labels at once; the step keeps twice that many in
flight (:func:`workflows.cluster.label_slots`): each running label has one queued behind it,
and a new one is claimed and submitted as soon as one finishes.

Four runners, side by side in one run:
- pesflow's Dask runner (:class:`workflows.dask_runner.PesflowDaskTaskRunner`) on a
  ``LocalCluster`` of 2 worker processes x 4 threads;
- the stock ``prefect_dask.DaskTaskRunner`` on the same cluster shape;
- a thread pool of 8;
- pesflow's Dask runner on ``dask_jobqueue.SLURMCluster``: a single-node SLURM started here
  (:mod:`benchmarks._slurm`, as the tests start it), 2 batch jobs of one Dask worker x 4
  threads (each job books 1 CPU: the labels only sleep), configured as docs/cluster.md says
  (``execution.dask``: ``cluster_class: slurm``, adaptive, the venv activated by
  ``job_script_prologue``), with ``minimum_jobs = maximum_jobs = 2`` so that the rounds
  measure labelling, not job start-up (waited for before the warm-up). Left out, with the
  reason, where SLURM is not installed.

Ideal wall time = ceil(labels / slots) x delay. Efficiency = ideal / measured (= measured /
ideal throughput); the target is >= 0.9. One warm-up round (worker start, imports) is not
counted; the figures are medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _config(delay: float) -> dict[str, Any]:
    return {
        "name": "bench-cluster",
        "structures": [
            {"generate": {"element": "Cu", "lattice_constant": 3.61, "repeat": [2, 2, 2]}}
        ],
        "labeler": {"name": "emt", "faults": {"fraction": 0.0, "delay": delay}, "retries": False},
        "exploration": {"walkers": [{"temperature": 300, "steps": 10}]},
    }


def _slurm_execution(tmp: Path, threads: int, jobs: int) -> Any:
    """The ``execution`` section of docs/cluster.md for the local single-node SLURM: ``jobs``
    batch jobs of one Dask worker with ``threads`` threads on one booked CPU, held at
    ``jobs`` by adaptive scaling (``minimum_jobs = maximum_jobs``)."""
    from workflows.config import ExecutionConfig

    return ExecutionConfig.model_validate(
        {
            "task_runner": "dask",
            "dask": {
                "cluster_class": "slurm",
                "cluster_kwargs": {
                    "cores": threads,
                    "job_cpu": 1,
                    "processes": 1,
                    "memory": "1GB",
                    "walltime": "00:30:00",
                    "log_directory": str(tmp / "slurm-jobs"),
                    "job_script_prologue": [f"source {Path(sys.executable).parent}/activate"],
                },
                "adapt_kwargs": {"minimum_jobs": jobs, "maximum_jobs": jobs},
            },
        }
    )


def _request(ctx: Any, it: Any, n: int, tag: int) -> None:
    """``n`` new rattled structures of the campaign, selected and requested for labelling."""
    import numpy as np

    from database import SelectionInput

    rng = np.random.default_rng(1000 + tag)
    atoms = []
    for _ in range(n):
        a = ctx.initial[0].copy()
        a.positions = a.positions + rng.normal(0.0, 0.05, a.positions.shape)
        atoms.append(a)
    store = ctx.store
    sids = store.add_structures(atoms, campaign=ctx.campaign_id, iteration_id=it.id, source="bench")
    store.record_selections(
        ctx.campaign_id, [SelectionInput(i, reason="bench") for i in sids], iteration_id=it.id
    )
    store.request_labels(
        ctx.campaign_id,
        sids,
        labeler=ctx.labeler_name,
        settings_hash=ctx.settings_hash,
        settings=dict(ctx.cfg.labeler.settings),
        iteration_id=it.id,
    )


def _measure(
    runner: Any,
    handle: Any,
    labels: int,
    window: int,
    rounds: int,
    round0: int,
    workers: int | None = None,
):
    """Label wall times of ``rounds`` rounds after a warm-up round, in one flow on ``runner``
    (with ``workers``, first wait until that many Dask workers are connected)."""
    from prefect import flow

    from workflows import steps
    from workflows.flows import PrefectEngine

    @flow(name="bench-cluster-labels", validate_parameters=False)
    def label_rounds() -> list[float]:
        if workers:  # the flow run's own task runner holds the Dask client
            from prefect.context import FlowRunContext

            FlowRunContext.get().task_runner.client.wait_for_workers(workers, timeout=300)
        ctx = steps.open_context(handle)
        it = ctx.store.start_iteration(ctx.campaign_id, 0)
        engine = PrefectEngine(label_slots=window)
        walls = []
        for r in range(rounds + 1):  # round 0: warm-up (worker processes import, connect)
            n = labels if r else 8
            _request(ctx, it, n, round0 + r)
            t0 = time.perf_counter()
            counts = steps.label_step(handle, it.id, engine)
            walls.append(time.perf_counter() - t0)
            if counts.failed or counts.done != n:
                raise RuntimeError(f"bench labels did not all finish: {counts}")
        return walls[1:]

    return label_rounds.with_options(task_runner=runner)()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table (target status on the last line)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--labels", type=int, default=16)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--delay", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dask-workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.slots % args.dask_workers:
        p.error("--slots must be a multiple of --dask-workers")

    from workflows.config import ExecutionConfig, parse_config
    from workflows.settings import configure_prefect_env, get_settings

    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")  # no logs after stop
    tmp = Path(tempfile.mkdtemp(prefix="pesflow-bench-cluster-"))
    settings = get_settings(data_dir=tmp)
    configure_prefect_env(settings)
    from prefect_dask import DaskTaskRunner

    from workflows.cluster import describe, label_slots, make_task_runner, task_runner_kwargs
    from workflows.steps import close_stores, open_store, setup_campaign

    cfg = parse_config(_config(args.delay))
    store = open_store(settings.resolved_database_url())
    handle = setup_campaign(store, cfg, tmp)
    dask = ExecutionConfig.model_validate(
        {
            "task_runner": "dask",
            "dask": {
                "cluster_class": "local",
                "cluster_kwargs": {
                    "n_workers": args.dask_workers,
                    "threads_per_worker": args.slots // args.dask_workers,
                },
            },
        }
    )
    threads = ExecutionConfig(task_runner="threads", max_workers=args.slots)
    slurm = _slurm_execution(tmp, args.slots // args.dask_workers, args.dask_workers)
    window = label_slots(dask)  # labels in flight: running + one queued behind each
    assert window == label_slots(threads) == label_slots(slurm) == 2 * args.slots
    runners = [  # (name, description, runner factory, Dask workers to wait for)
        ("dask", f"{describe(dask)}, pesflow runner", lambda: make_task_runner(dask), None),
        (
            "dask-stock",
            f"{describe(dask)}, stock prefect_dask",
            lambda: DaskTaskRunner(**task_runner_kwargs(dask)),
            None,
        ),
        ("threads", describe(threads), lambda: make_task_runner(threads), None),
    ]
    from ._slurm import missing, single_node_slurm

    no_slurm = missing()
    if no_slurm is None:
        runners.append(
            (
                "slurm",
                f"{describe(slurm)}, {args.slots // args.dask_workers} threads per job, "
                "pesflow runner",
                lambda: make_task_runner(slurm),
                args.dask_workers,
            )
        )
    ideal = math.ceil(args.labels / args.slots) * args.delay
    rows, efficiency = [], {}
    # Dask worker processes must reach the same Prefect API: with no PREFECT_API_URL each
    # would start a temporary server of its own. Start one here, as `pesflow run` does.
    from workflows.local_api import prefect_api

    try:
        with contextlib.ExitStack() as stack:
            if no_slurm is None:  # stopped (and checked) after the last round
                stack.enter_context(single_node_slurm(tmp / "slurm"))
            stack.enter_context(prefect_api(settings.prefect_startup_timeout_s))
            for i, (name, desc, factory, workers) in enumerate(runners):
                walls = _measure(
                    factory(), handle, args.labels, window, args.rounds, 100 * i, workers
                )
                med = statistics.median(walls)
                efficiency[name] = ideal / med
                rows.append((desc, med, min(walls), max(walls), ideal / med, args.labels / med))
    finally:
        close_stores()
    print(
        f"label throughput: {args.labels} labels x {args.delay:g} s (mock EMT labeler "
        f"sleeping), {args.slots} slots, median of {args.rounds} rounds after a warm-up; "
        f"ideal {ideal:.2f} s"
    )
    print("| task runner | median wall (s) | min | max | measured / ideal throughput | labels/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for desc, med, lo, hi, eff, rate in rows:
        print(f"| {desc} | {med:.2f} | {lo:.2f} | {hi:.2f} | **{eff:.3f}** | {rate:.2f} |")
    if no_slurm is not None:
        print(f"| dask_jobqueue.SLURMCluster | not measured: {no_slurm} | | | | |")
    eff = efficiency["dask"]
    print(
        f"target measured/ideal >= 0.9 on the Dask local cluster: "
        f"{'met' if eff >= 0.9 else 'NOT met'} ({eff:.3f}; stock prefect_dask "
        f"{efficiency['dask-stock']:.3f}, ratio {eff / efficiency['dask-stock']:.2f}x)"
    )
    if "slurm" in efficiency:
        print(
            f"through SLURM batch jobs: measured/ideal {efficiency['slurm']:.3f} "
            f"({efficiency['slurm'] / eff:.2f}x the local cluster's)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
