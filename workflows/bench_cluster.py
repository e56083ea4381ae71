"""Label throughput through the task runners (``python -m workflows.bench_cluster``).

The mock labeler (EMT) sleeps ``--delay`` s (default 2) per label; ``--labels`` (16) labels per
round go through the real label step (:func:`workflows.steps.label_step`: claim a batch of
``--slots`` labels from the database, submit one Prefect task per label, store the results)
with ``--slots`` (8) concurrent slots: a Dask ``LocalCluster`` of 2 worker processes x 4
threads, and a thread pool of 8 side by side. Ideal wall time = ceil(labels / slots) x delay;
efficiency = ideal / measured (= measured / ideal throughput), target >= 0.9. One warm-up
round (worker start, imports) is not counted; medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
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
    runner: Any, handle: Any, labels: int, slots: int, rounds: int, round0: int, batch: int
) -> list[float]:
    from prefect import flow

    from . import steps
    from .flows import label_task

    @flow(name="bench-cluster-labels", validate_parameters=False)
    def label_rounds() -> list[float]:
        ctx = steps.open_context(handle)
        it = ctx.store.start_iteration(ctx.campaign_id, 0)

        def label_map(ids: list[int]) -> list[str]:
            return [f.result() for f in [label_task.submit(handle, i) for i in ids]]

        walls = []
        for r in range(rounds + 1):  # round 0: warm-up (worker processes import, connect)
            _request(ctx, it, labels if r else slots, round0 + r)
            t0 = time.perf_counter()
            counts = steps.label_step(ctx, it, label_map, batch=batch)
            walls.append(time.perf_counter() - t0)
            if counts.get("failed"):
                raise RuntimeError(f"bench labels failed: {counts}")
        return walls[1:]

    return label_rounds.with_options(task_runner=runner)()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table (target status on the last line)."""
    p = argparse.ArgumentParser(
        prog="python -m workflows.bench_cluster",
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

    from .config import ExecutionConfig, parse_config
    from .settings import configure_prefect_env, get_settings

    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")  # no logs after stop
    tmp = Path(tempfile.mkdtemp(prefix="pesflow-bench-cluster-"))
    settings = get_settings(data_dir=tmp)
    configure_prefect_env(settings)
    from .cluster import describe, make_task_runner
    from .steps import close_stores, open_store, setup_campaign

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
    # (name, runner, labels claimed and submitted at a time): the campaign's label step
    # claims one batch per free slot and waits for it; "all" submits the whole round.
    runners = [
        ("dask", dask, args.slots),
        ("dask-all", dask, args.labels),
        ("threads", threads, args.slots),
    ]
    ideal = math.ceil(args.labels / args.slots) * args.delay
    rows, efficiency = [], {}
    # Dask worker processes must reach the same Prefect API: with no PREFECT_API_URL each
    # would start a temporary server of its own. Start one here and export its URL.
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=settings.prefect_startup_timeout_s)
        os.environ["PREFECT_API_URL"] = server.api_url
    try:
        for i, (name, ex, batch) in enumerate(runners):
            walls = _measure(
                make_task_runner(ex),
                handle,
                args.labels,
                args.slots,
                args.rounds,
                round0=100 * i,
                batch=batch,
            )
            med = statistics.median(walls)
            efficiency[name] = ideal / med
            rows.append(
                (describe(ex), batch, med, min(walls), max(walls), ideal / med, args.labels / med)
            )
    finally:
        close_stores()
        if server is not None:
            server.stop()
            os.environ.pop("PREFECT_API_URL", None)
    print(
        f"label throughput: {args.labels} labels x {args.delay:g} s (mock EMT labeler "
        f"sleeping), {args.slots} slots, median of {args.rounds} rounds after a warm-up; "
        f"ideal {ideal:.2f} s"
    )
    print(
        "| task runner | labels per submission | median wall (s) | min | max "
        "| measured / ideal throughput | labels/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for desc, batch, med, lo, hi, eff, rate in rows:
        print(
            f"| {desc} | {batch} | {med:.2f} | {lo:.2f} | {hi:.2f} | **{eff:.3f}** | {rate:.2f} |"
        )
    best = max(efficiency["dask"], efficiency["dask-all"])
    print(
        f"target measured/ideal >= 0.9 on the Dask local cluster: "
        f"{'met' if best >= 0.9 else 'NOT met'} (campaign batching {efficiency['dask']:.3f}, "
        f"whole round {efficiency['dask-all']:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
