"""Concurrent label claiming: 2 worker processes x 500 labels, none claimed twice, none lost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from ase import Atoms

from database import Store

ROOT = Path(__file__).resolve().parents[2]


def _small_frames(n: int) -> list[Atoms]:
    rng = np.random.default_rng(42)
    return [
        Atoms("Cu4", positions=rng.uniform(0, 5, size=(4, 3)), cell=np.eye(3) * 5, pbc=True)
        for _ in range(n)
    ]


def _pending_labels(store: Store, n: int) -> list[int]:
    c = store.create_campaign("race")
    sids = store.add_structures(_small_frames(n), campaign=c.id)
    return store.request_labels(c.id, sids, labeler="mock", settings_hash="h")


def test_two_worker_processes_claim_1000_labels_disjointly(store, db_url):
    lids = _pending_labels(store, 1000)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.database._worker", "claim", db_url, f"w{i}"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:  # both connected and waiting: start them together
        assert p.stdout.readline().strip() == "READY"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    claimed = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        claimed.append(json.loads(out.strip().splitlines()[-1]))
    a, b = (set(x) for x in claimed)
    assert len(a) == len(claimed[0]) and len(b) == len(claimed[1])  # no repeats in a worker
    assert not a & b  # never the same label twice
    assert a | b == set(lids)  # none lost
    assert min(len(a), len(b)) > 100  # both really worked concurrently
    assert store.count_labels() == {"pending": 0, "running": 0, "done": 1000, "failed": 0}
    for lb in store.list_labels(limit=None):
        assert lb.claims == 1  # claimed once; no DFT run recorded by this fake worker
        assert lb.host == lb.worker  # the worker that claimed it stored its result
        assert lb.energy == -float(lb.id)


def test_threads_claiming_in_batches_never_overlap(store):
    lids = _pending_labels(store, 300)
    got: list[list[int]] = [[], [], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def work(i: int) -> None:
        try:
            barrier.wait()
            while tasks := store.claim_labels(limit=7, worker=f"t{i}"):
                got[i].extend(t.label_id for t in tasks)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    flat = [x for g in got for x in g]
    assert sorted(flat) == sorted(lids)
    assert store.count_labels()["running"] == 300
