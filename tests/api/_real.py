"""A campaign produced by a short real run: the workflow's own steps (committee training, MD
exploration, selection, EMT labelling, decision), run in-process without Prefect."""

from __future__ import annotations

from pathlib import Path

from ._data import tiny_config

# Three iterations, a committee trained long enough to draw a falling validation error.
REAL = {
    "training": {"max_epochs": 40, "max_time_s": 10, "warm_start_epochs": 15},
    "trust": {"lo": 0.05, "hi": 1.0},
    "convergence": {"max_iterations": 3},
}


def run_real_campaign(data_dir: Path, name: str = "real", db_url: str | None = None) -> int:
    """Run the tiny campaign (3 iterations) into ``data_dir``; returns the campaign id."""
    from database import sqlite_url
    from workflows import lease
    from workflows.config import parse_config
    from workflows.steps import close_stores, open_context, open_store, run_campaign, setup_campaign

    data_dir.mkdir(parents=True, exist_ok=True)
    url = db_url or sqlite_url(data_dir)
    cfg = parse_config(tiny_config(name, **REAL), source="test", base_dir=data_dir)
    store = open_store(url)
    try:
        handle = setup_campaign(store, cfg, data_dir)
        with lease.hold(store, handle.campaign_id, purpose="test") as held:
            d = run_campaign(open_context(handle), held)
            held.finish(d.status, d.message)
        return handle.campaign_id
    finally:
        close_stores()
