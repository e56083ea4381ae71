"""Database benchmark: ``python -m benchmarks.database`` (run by ``make bench``).

Inserts N labelled 108-atom structures (structures + selections + done labels with forces and
stress, deduplication included), queries the N-label training set, and exports it to extended
XYZ, on SQLite (a file in a temporary directory) and on PostgreSQL (a temporary schema in the
database named by ``PESFLOW_TEST_POSTGRES_URL``, else in the local ``test`` database if a server
answers on 127.0.0.1:5432; skipped with the reason otherwise). Each step
is repeated ``--repeats`` times on fresh data; medians are printed side by side with the
PostgreSQL / SQLite ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from database.engine import sqlite_url
from database.extxyz import export_extxyz
from database.store import Store
from database.testing import POSTGRES_ENV, temporary_postgres_schema

TARGETS = {
    "insert": {"sqlite": 10.0, "postgresql": 15.0},
    "export": {"sqlite": 10.0, "postgresql": 10.0},
}


DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_url() -> tuple[str | None, str]:
    """The PostgreSQL test URL to benchmark: ``PESFLOW_TEST_POSTGRES_URL``, else the local
    default (the one ``.ci/run`` exports) if a server answers there; otherwise ``None`` and
    the reason."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url, ""
    try:
        import psycopg

        psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2
        ).close()
    except Exception as exc:  # any failure means: no local test server to use
        return None, f"{POSTGRES_ENV} is not set and {DEFAULT_POSTGRES_URL} does not answer ({exc})"
    print(f"{POSTGRES_ENV} is not set: using the local {DEFAULT_POSTGRES_URL}")
    return DEFAULT_POSTGRES_URL, ""


def make_frames(n: int, seed: int):
    """n distinct rattled 108-atom Cu cells with random energies, forces and stresses."""
    from ase.build import bulk

    base = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    rng = np.random.default_rng(seed)
    frames, energies, forces, stresses = [], [], [], []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        frames.append(a)
        energies.append(float(rng.normal(-3.7 * len(a), 1.0)))
        forces.append(rng.normal(size=(len(a), 3)))
        stresses.append(rng.normal(scale=1e-3, size=6))
    return frames, energies, forces, stresses


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_backend(url: str, n: int, repeats: int, workdir: Path) -> dict[str, list[float]]:
    """Time insert / query / export ``repeats`` times on the database at ``url``."""
    times: dict[str, list[float]] = {"insert": [], "query": [], "export": []}
    with Store.from_url(url) as store:
        for r in range(repeats):
            frames, energies, forces, stresses = make_frames(n, seed=1000 * r + 1)
            c = store.create_campaign(f"bench-{r}")
            dt, ids = _timed(
                lambda c=c, f=frames, e=energies, fo=forces, s=stresses: store.add_labelled(
                    c.id,
                    f,
                    energies=e,
                    forces=fo,
                    stresses=s,
                    labeler="mock",
                    settings_hash="bench",
                )
            )
            assert len(set(ids)) == n, "benchmark frames must be distinct"
            times["insert"].append(dt)
            del frames, forces
            dt, ts = _timed(
                lambda c=c: store.training_set(c.id, labeler="mock", settings_hash="bench")
            )
            assert len(ts) == n
            times["query"].append(dt)
            del ts
            path = workdir / f"export-{store.backend}-{r}.xyz"
            dt, k = _timed(
                lambda c=c, p=path: export_extxyz(
                    store, p, c.id, labeler="mock", settings_hash="bench"
                )
            )
            assert k == n
            times["export"].append(dt)
            path.unlink()
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (exit status 1 on a missed target with --strict)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.database", description=__doc__.splitlines()[0]
    )
    p.add_argument("-n", type=int, default=10_000, help="labelled structures (default 10000)")
    p.add_argument("--repeats", type=int, default=1, help="fresh repetitions (median shown)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)

    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="pesflow-bench-") as tmp:
        work = Path(tmp)
        print(
            f"database bench: {args.n} labelled 108-atom structures, {args.repeats} repeat(s)",
            flush=True,
        )
        results["sqlite"] = run_backend(sqlite_url(work / "sqlite"), args.n, args.repeats, work)
        pg, why = postgres_url()
        if pg:
            with temporary_postgres_schema(pg, prefix="bench") as url:
                results["postgresql"] = run_backend(url, args.n, args.repeats, work)
        else:
            print(f"PostgreSQL skipped: {why}")

    backends = list(results)
    header = f"{'step':<34}" + "".join(f"{b:>12}" for b in backends)
    if "postgresql" in results:
        header += f"{'pg/sqlite':>11}"
    print(header)
    labels = {
        "insert": f"insert {args.n} labelled (s)",
        "query": f"query {args.n} training set (s)",
        "export": f"export {args.n} to extxyz (s)",
    }
    missed = []
    for step, label in labels.items():
        med = {b: statistics.median(results[b][step]) for b in backends}
        line = f"{label:<34}" + "".join(f"{med[b]:>12.2f}" for b in backends)
        if "postgresql" in med:
            line += f"{med['postgresql'] / med['sqlite']:>11.2f}"
        print(line)
        for b in backends:
            target = TARGETS.get(step, {}).get(b)
            if target is not None and args.n >= 10_000 and med[b] > target:
                missed.append(f"{step} on {b}: {med[b]:.2f} s > target {target:.0f} s")
    targets = ", ".join(
        f"{s} <= {t['sqlite']:.0f} s SQLite / {t['postgresql']:.0f} s PostgreSQL"
        for s, t in TARGETS.items()
    )
    print(f"targets (10k): {targets}")
    for m in missed:
        print(f"MISSED {m}")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
