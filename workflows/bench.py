"""Orchestration overhead of a campaign: wall time minus the time spent inside MD, labelling
and training (the union of those intervals, so concurrent work counts once).

``python -m workflows.bench [CONFIG]`` (run by ``make bench``; default: the demo campaign
``examples/cu_emt.yaml``) runs the campaign through the Prefect flow on the temporary local
server in a fresh data directory and prints the breakdown. Target: overhead <= 10 %.
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
    from . import timing
    from .config import load_config
    from .settings import configure_prefect_env, get_settings
    from .steps import open_store, setup_campaign

    settings = get_settings(data_dir=Path(data_dir), prefect_home=prefect_home)
    configure_prefect_env(settings)
    t0 = time.perf_counter()
    from .flows import run_flow  # Prefect import counts as orchestration

    cfg = load_config(config)
    store = open_store(settings.resolved_database_url())
    handle = setup_campaign(store, cfg, settings.data_dir)
    timing.clear()
    result = run_flow(handle, cfg.execution)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "busy_s": timing.busy_seconds(since=t0)}
    for kind in ("md", "label", "train"):
        out[f"{kind}_s"] = timing.busy_seconds(since=t0, kinds={kind})
    spans = timing.intervals()
    out["startup_s"] = (min(a for _, a, _ in spans) - t0) if spans else wall
    out["overhead_s"] = wall - out["busy_s"]
    out["overhead_fraction"] = out["overhead_s"] / wall
    out["iterations"] = float(len(store.list_iterations(handle.campaign_id)))
    out["status"] = result["status"]  # type: ignore[assignment]
    return out


def main(argv: list[str] | None = None, data_dir: str | Path | None = None) -> int:
    """Print the overhead of the campaign in ``argv[0]`` (default: the demo); exit 0."""
    argv = sys.argv[1:] if argv is None else argv
    config = Path(argv[0]) if argv else DEFAULT
    warm = (PREFECT_HOME / "prefect.db").exists()
    with tempfile.TemporaryDirectory(prefix="pesflow-bench-") as tmp:
        r = measure(config, data_dir or tmp, prefect_home=PREFECT_HOME)
    print(
        f"campaign {config.name}: {int(r['iterations'])} iterations, {r['status']} "
        f"(fresh campaign database; {'warm' if warm else 'new'} Prefect home {PREFECT_HOME})"
    )
    print(f"  wall time                   {r['wall_s']:8.1f} s")
    print(f"  inside MD (union)           {r['md_s']:8.1f} s")
    print(f"  inside labelling (union)    {r['label_s']:8.1f} s")
    print(f"  inside training (union)     {r['train_s']:8.1f} s")
    print(f"  busy (union of all)         {r['busy_s']:8.1f} s")
    print(
        f"  start-up (Prefect server, flow run, set-up until the first labelling) "
        f"{r['startup_s']:.1f} s; in the loop {r['overhead_s'] - r['startup_s']:.1f} s"
    )
    print(
        f"  orchestration overhead      {r['overhead_s']:8.1f} s = "
        f"{100 * r['overhead_fraction']:.1f} % of wall time (target <= 10 %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
