"""Orchestration overhead of a campaign: wall time minus the time spent inside MD, labelling
and training (the union of those intervals, so concurrent work counts once).

``python -m benchmarks.workflows [CONFIG]`` (run by ``make bench``; default: the demo campaign
``examples/cu_emt.yaml``) runs the campaign through the Prefect flow on the temporary local
server in a fresh data directory and prints the breakdown. Target: overhead <= 10 %.

The Prefect home (``data/bench/prefect``) is kept between runs, as ``make demo`` keeps its own.
When it is new, Prefect must first create and migrate its SQLite database, once. The bench does
that before the timed campaign and prints what it cost. It times a first server start (creates
the database) and a second one (database in place) side by side, and prints the overhead that a
first campaign on a new Prefect home would have.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure"]

DEFAULT = Path(__file__).resolve().parents[1] / "examples" / "cu_emt.yaml"


PREFECT_HOME = Path(__file__).resolve().parents[1] / "data" / "bench" / "prefect"


def measure(
    config: str | Path, data_dir: str | Path, prefect_home: str | Path | None = None
) -> dict[str, float]:
    """Run ``config`` in ``data_dir`` through the flow; return the timing breakdown (s).

    ``prefect_home`` (default ``<data_dir>/prefect``) is where the temporary Prefect server
    keeps its database: a home used before ("warm") starts faster than a new one."""
    from workflows import timing
    from workflows.config import load_config
    from workflows.settings import configure_prefect_env, get_settings
    from workflows.steps import open_store, setup_campaign

    settings = get_settings(data_dir=Path(data_dir), prefect_home=prefect_home)
    t0 = time.perf_counter()
    configure_prefect_env(settings)
    from workflows.local_api import prefect_api

    cfg = load_config(config)
    store = open_store(settings.resolved_database_url())
    handle = setup_campaign(store, cfg, settings.data_dir)
    timing.clear()
    # as `pesflow run` does it: the temporary Prefect API starts while Prefect, torch and the
    # science packages are imported (all of it counts as orchestration)
    from workflows import lease

    with (
        lease.hold(store, handle.campaign_id, purpose="bench") as held,
        prefect_api(settings.prefect_startup_timeout_s) as api,
    ):
        from workflows.flows import run_flow

        result = run_flow(handle, cfg.execution)
        held.finish(result["status"], result["message"])
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "busy_s": timing.busy_seconds(since=t0)}
    for kind in ("md", "label", "train"):
        out[f"{kind}_s"] = timing.busy_seconds(since=t0, kinds={kind})
    spans = timing.intervals()
    out["startup_s"] = (min(a for _, a, _ in spans) - t0) if spans else wall
    out["overhead_s"] = wall - out["busy_s"]
    out["overhead_fraction"] = out["overhead_s"] / wall
    out["iterations"] = float(len(store.list_iterations(handle.campaign_id)))
    out["api_ready_s"] = (api.ready_after_s or 0.0) if api is not None else 0.0
    out["status"] = result["status"]  # type: ignore[assignment]
    return out


def create_prefect_database(prefect_home: Path) -> tuple[float, float]:
    """Start the temporary API on a new ``prefect_home`` (creates and migrates Prefect's
    database), then once more with the database in place; returns both ready times (s)."""
    from workflows.local_api import LocalAPI
    from workflows.settings import configure_prefect_env, get_settings

    configure_prefect_env(get_settings(prefect_home=prefect_home))
    times = []
    for _ in range(2):
        api = LocalAPI().start()
        try:
            api.wait()
            times.append(api.ready_after_s or 0.0)
        finally:
            api.stop()
    return times[0], times[1]


def main(argv: list[str] | None = None, data_dir: str | Path | None = None) -> int:
    """Print the overhead of the campaign in ``argv[0]`` (default: the demo); exit 0."""
    argv = sys.argv[1:] if argv is None else argv
    config = Path(argv[0]) if argv else DEFAULT
    created = None
    if not (PREFECT_HOME / "prefect.db").exists():
        created = create_prefect_database(PREFECT_HOME)
    with tempfile.TemporaryDirectory(prefix="pesflow-bench-") as tmp:
        r = measure(config, data_dir or tmp, prefect_home=PREFECT_HOME)
    print(
        f"campaign {config.name}: {int(r['iterations'])} iterations, {r['status']} "
        f"(fresh campaign database; Prefect home {PREFECT_HOME})"
    )
    print(f"  wall time                   {r['wall_s']:8.1f} s")
    print(f"  inside MD (union)           {r['md_s']:8.1f} s")
    print(f"  inside labelling (union)    {r['label_s']:8.1f} s")
    print(f"  inside training (union)     {r['train_s']:8.1f} s")
    print(f"  busy (union of all)         {r['busy_s']:8.1f} s")
    print(
        f"  start-up (Prefect server, imports, flow run, set-up until the first labelling) "
        f"{r['startup_s']:.1f} s; in the loop {r['overhead_s'] - r['startup_s']:.1f} s"
    )
    print(
        f"  temporary Prefect API ready after {r['api_ready_s']:.1f} s "
        "(in parallel with imports and campaign set-up)"
    )
    print(
        f"  orchestration overhead      {r['overhead_s']:8.1f} s = "
        f"{100 * r['overhead_fraction']:.1f} % of wall time (target <= 10 %)"
    )
    if created is not None:
        first, again = created
        extra = max(first - again, 0.0)
        print(
            f"  one-time set-up before the run: Prefect created its database in the new home; "
            f"server ready after {first:.1f} s (creating it) vs {again:.1f} s (in place)"
        )
        print(
            f"  a first campaign on a new Prefect home: +{extra:.1f} s -> "
            f"{100 * (r['overhead_s'] + extra) / (r['wall_s'] + extra):.1f} % overhead"
        )
    else:
        print("  (Prefect's database already existed in this home: no one-time set-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
