"""A transaction interrupted by an exception or by SIGKILL leaves no half-written label."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from database import Store

from .conftest import make_atoms, make_result

ROOT = Path(__file__).resolve().parents[2]


def _row_counts(store: Store) -> dict[str, int]:
    from sqlalchemy import text

    with store.session(write=False) as s:
        return {
            t: s.execute(text(f"SELECT count(*) FROM {t}")).scalar()
            for t in ("structures", "selections", "labels")
        }


@pytest.fixture
def running_label(store, campaign):
    atoms = make_atoms(0)
    sid = store.add_structure(atoms, campaign=campaign.id)
    (lid,) = store.request_labels(campaign.id, [sid], labeler="mock", settings_hash="h")
    (task,) = store.claim_labels()
    assert task.label_id == lid
    return lid, atoms


def test_exception_before_commit_leaves_label_untouched(store, running_label):
    lid, atoms = running_label
    e, f, s = make_result(atoms)

    def boom(session):
        raise RuntimeError("injected failure before COMMIT")

    event.listen(Session, "before_commit", boom)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            store.store_result(lid, energy=e, forces=f, stress=s)
    finally:
        event.remove(Session, "before_commit", boom)
    lb = store.get_label(lid)
    assert (lb.status, lb.energy, lb.forces, lb.stress) == ("running", None, None, None)
    store.store_result(lid, energy=e, forces=f, stress=s)  # and it can still be completed
    assert store.get_label(lid).status == "done"


def test_exception_midway_through_bulk_import_stores_nothing(store, campaign, monkeypatch):
    frames = [make_atoms(i) for i in range(20)]
    results = [make_result(a, i) for i, a in enumerate(frames)]
    before = _row_counts(store)

    def fail(*args, **kwargs):  # structures are already inserted when selections fail
        raise RuntimeError("injected failure after inserting structures")

    monkeypatch.setattr(Store, "_record_selections", fail)
    with pytest.raises(RuntimeError, match="injected"):
        store.add_labelled(
            campaign.id,
            frames,
            energies=[r[0] for r in results],
            forces=[r[1] for r in results],
            labeler="mock",
            settings_hash="h",
        )
    assert _row_counts(store) == before


def _spawn_and_kill(args: list[str]) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.database._worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.strip() == "READY", f"worker did not reach the commit: {line!r}"
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    finally:
        if p.poll() is None:  # pragma: no cover
            p.kill()


def test_killed_worker_mid_result_leaves_no_half_written_label(store, db_url, running_label):
    lid, atoms = running_label
    _spawn_and_kill(["hang-result", db_url, str(lid), str(len(atoms))])
    lb = store.get_label(lid)
    assert (lb.status, lb.energy, lb.forces, lb.stress, lb.finished_at) == (
        "running",
        None,
        None,
        None,
        None,
    )
    # The database is not left locked: the label is requeued and completed normally.
    assert store.requeue_running() == 1
    (task,) = store.claim_labels()
    e, f, _ = make_result(atoms)
    done = store.store_result(task.label_id, energy=e, forces=f)
    assert done.status == "done" and np.array_equal(done.forces, f)


def test_killed_process_mid_bulk_import_stores_nothing(store, db_url, campaign):
    store.add_structure(make_atoms(1000))  # one frame of the import already exists
    before = _row_counts(store)
    _spawn_and_kill(["hang-bulk", db_url, campaign.name, "30"])
    assert _row_counts(store) == before
    assert store.count_labels() == {"pending": 0, "running": 0, "done": 0, "failed": 0}
