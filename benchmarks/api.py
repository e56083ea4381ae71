"""API benchmark: ``python -m benchmarks.api`` (run by ``make bench``).

Builds a campaign with 200 iterations and 100k structures (bulk Core inserts: structures,
selections with uncertainties, labels with forces — 90 % done, 5 % failed by kind, 5 %
pending — iterations with walker statistics and 2,000 explored-frame uncertainties each,
one model per iteration) in a temporary SQLite database and, when a test server answers, a
temporary PostgreSQL schema (see ``benchmarks.database.postgres_url``); then times the campaign page
server-side through the ASGI app (``TestClient``): the HTML page and the dashboard JSON it
loads, separately and together. Prints medians; the target is < 1000 ms for the page.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

TARGET_MS = 1000.0


def build(store, n_iterations: int = 200, n_structures: int = 100_000, seed: int = 0) -> int:
    """Fill ``store`` with one large campaign; returns its id."""
    from database.models import (
        Iteration,
        IterationStep,
        Label,
        Model,
        Selection,
        Structure,
        WalkerRun,
        utcnow,
    )

    rng = np.random.default_rng(seed)
    c = store.create_campaign("bench", {"name": "bench", "trust": {"lo": 0.05, "hi": 0.35}})
    per_it = n_structures // n_iterations
    now = utcnow()
    kinds = ["scf_unconverged", "crashed", "timeout", "invalid_input"]
    numbers = np.full(8, 29, dtype=np.int64)
    cell = np.eye(3) * 3.61 * np.array([2, 1, 1])
    with store.session() as s:
        it_rows = [
            {
                "campaign_id": c.id,
                "index": i,
                "status": "done",
                "started_at": now,
                "finished_at": now,
                "n_explored": 2000,
                "n_accurate": 1000 + i * 4,
                "n_candidate": 900 - i * 4,
                "n_failed": 100,
                "decision": f"iteration {i}: accurate fraction below 0.9",
            }
            for i in range(n_iterations)
        ]
        s.execute(store._insert(Iteration), it_rows)
        it_ids = [
            r[0]
            for r in s.execute(
                Iteration.__table__.select()
                .with_only_columns(Iteration.id)
                .where(Iteration.campaign_id == c.id)
                .order_by(Iteration.index)
            )
        ]
        steps = {"train": 30.0, "explore": 20.0, "select": 0.5, "label": 45.0}
        s.execute(
            store._insert(IterationStep),
            [
                {"iteration_id": it, "step": k, "seconds": v + rng.random(), "completed_at": now}
                for it in it_ids
                for k, v in steps.items()
            ],
        )
        s.execute(
            store._insert(WalkerRun),
            [
                {
                    "iteration_id": it,
                    "walker": w,
                    "status": "done",
                    "temperature": 300.0 * (w + 1),
                    "n_frames": 500,
                    "n_accurate": 250,
                    "n_candidate": 225,
                    "n_failed": 25,
                    "stopped_early": False,
                    "max_force_devs": rng.gamma(2, 0.03, 500),
                    "finished_at": now,
                }
                for it in it_ids
                for w in range(4)
            ],
        )
        for start in range(0, n_structures, 5000):
            idx = np.arange(start, min(start + 5000, n_structures))
            srows, pos = [], rng.normal(0, 0.05, (len(idx), 8, 3))
            for k, j in enumerate(idx):
                srows.append(
                    {
                        "hash": f"{j:064x}",
                        "natoms": 8,
                        "formula": "Cu8",
                        "numbers": numbers,
                        "positions": pos[k],
                        "cell": cell,
                        "pbc": np.ones(3, dtype=bool),
                        "source": "md",
                        "origin_campaign_id": c.id,
                        "origin_iteration_id": it_ids[min(j // per_it, n_iterations - 1)],
                        "walker": f"w{j % 4}",
                        "temperature": 300.0 * (j % 4 + 1),
                        "md_step": int(j % 500),
                        "info": {},
                        "created_at": now,
                    }
                )
            ids = [
                r[0]
                for r in s.execute(
                    store._insert(Structure).returning(Structure.id, sort_by_parameter_order=True),
                    srows,
                )
            ]
            devs = rng.gamma(2, 0.08, len(ids))
            sel, lab = [], []
            for k, (sid, j) in enumerate(zip(ids, idx, strict=True)):
                it_id = it_ids[min(j // per_it, n_iterations - 1)]
                sel.append(
                    {
                        "campaign_id": c.id,
                        "iteration_id": it_id,
                        "structure_id": sid,
                        "max_force_dev": float(devs[k]),
                        "reason": "candidate",
                        "created_at": now,
                    }
                )
                u = rng.random()
                status = "done" if u < 0.9 else ("failed" if u < 0.95 else "pending")
                lab.append(
                    {
                        "structure_id": sid,
                        "campaign_id": c.id,
                        "iteration_id": it_id,
                        "labeler": "emt",
                        "labeler_version": "",
                        "settings_hash": "h" * 16,
                        "settings": {},
                        "status": status,
                        "energy": -3.5 if status == "done" else None,
                        "forces": rng.normal(0, 0.3, (8, 3)) if status == "done" else None,
                        "stress": None,
                        "failure_kind": kinds[j % 4] if status == "failed" else None,
                        "failure_message": "bench" if status == "failed" else None,
                        "attempts": 1,
                        "created_at": now,
                        "finished_at": now,
                    }
                )
            s.execute(store._insert(Selection), sel)
            s.execute(store._insert(Label), lab)
        s.execute(
            store._insert(Model),
            [
                {
                    "campaign_id": c.id,
                    "iteration_id": it_ids[i],
                    "member_count": 4,
                    "checkpoint_uri": f"campaigns/bench/models/iter-{i:03d}.pt",
                    "checkpoint_sha256": "0" * 64,
                    "training_label_ids": np.arange(per_it * i, dtype=np.int64),
                    "validation": {
                        "val_force_rmse": 0.2 / (1 + i / 10),
                        "val_energy_rmse": 0.01 / (1 + i / 10),
                        "n_train": per_it * i,
                    },
                    "created_at": now,
                }
                for i in range(n_iterations)
            ],
        )
    return c.id


def measure(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """Build the campaign in the database at ``url`` and time the page; medians in ms."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import get_api_settings
    from database import Store

    settings = get_api_settings(data_dir=data_dir, database_url=url)
    store = Store.from_url(url)
    try:
        t0 = time.perf_counter()
        cid = build(store, args.iterations, args.structures)
        built = time.perf_counter() - t0
        labels = store.count_labels(cid)
        with TestClient(create_app(settings, store=store)) as client:

            def timed(path: str) -> tuple[float, int]:
                t = time.perf_counter()
                r = client.get(path)
                r.raise_for_status()
                return (time.perf_counter() - t) * 1000, len(r.content)

            html, data = f"/campaigns/{cid}", f"/api/v1/campaigns/{cid}/dashboard"
            timed(html), timed(data)  # warm-up
            structs = f"/api/v1/campaigns/{cid}/structures?offset=50000&limit=100"
            failed = f"/api/v1/campaigns/{cid}/labels?status=failed&offset=1000&limit=100"
            timed(structs), timed(failed)
            page_ms, data_ms, size, st_ms, lab_ms = [], [], 0, [], []
            for _ in range(args.repeats):
                page_ms.append(timed(html)[0])
                ms, size = timed(data)
                data_ms.append(ms)
                st_ms.append(timed(structs)[0])
                lab_ms.append(timed(failed)[0])
    finally:
        store.close()
    total = [a + b for a, b in zip(page_ms, data_ms, strict=True)]
    return {
        "built_s": built,
        "labels": sum(labels.values()),
        "html": statistics.median(page_ms),
        "data": statistics.median(data_ms),
        "total": statistics.median(total),
        "kib": size / 1024,
        "structures": statistics.median(st_ms),
        "labels_page": statistics.median(lab_ms),
    }


def main(argv: list[str] | None = None) -> int:
    """Build the campaign on SQLite (and PostgreSQL when a test server answers), time the
    page, print medians side by side; exit 1 if a backend is over the target."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.api", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--structures", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sqlite-only", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from benchmarks.database import postgres_url
    from database import sqlite_url
    from database.testing import temporary_postgres_schema

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pesflow-api-bench-") as tmp:
        results["sqlite"] = measure(sqlite_url(tmp), Path(tmp), args)
        pg, reason = (None, "--sqlite-only") if args.sqlite_only else postgres_url()
        if pg is None:
            print(f"PostgreSQL skipped: {reason}")
        else:
            with temporary_postgres_schema(pg, prefix="pfbench") as scoped:
                results["postgresql"] = measure(scoped, Path(tmp), args)
    print(
        f"campaign of {args.iterations} iterations, {args.structures} structures; "
        f"medians of {args.repeats} requests (ASGI, server side)"
    )
    print(f"{'':30}" + "".join(f"{name:>14}" for name in results))
    rows = [
        ("build (bulk insert), s", "built_s", ".1f"),
        ("labels", "labels", ".0f"),
        ("page HTML, ms", "html", ".1f"),
        ("dashboard data JSON, ms", "data", ".1f"),
        ("campaign page total, ms", "total", ".1f"),
        ("JSON size, KiB", "kib", ".0f"),
        ("structures page (100), ms", "structures", ".1f"),
        ("failed labels page (100), ms", "labels_page", ".1f"),
    ]
    for label, key, fmt in rows:
        print(f"{label:30}" + "".join(f"{format(r[key], fmt):>14}" for r in results.values()))
    ok = all(r["total"] < TARGET_MS for r in results.values())
    print(f"campaign page server time < {TARGET_MS:.0f} ms: {'ok' if ok else 'TOO SLOW'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
