"""Label life cycle: request (idempotent), claim, result / failure, requeue, training set."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from database import AttemptInput, LabelStateError, SelectionInput
from database.extxyz import labelled_atoms

from .conftest import make_atoms, make_result


@pytest.fixture
def setup(store, campaign):
    it = store.start_iteration(campaign.id)
    frames = [make_atoms(i) for i in range(6)]
    sids = store.add_structures(frames, campaign=campaign.id, iteration_id=it.id)
    store.record_selections(
        campaign.id,
        [
            SelectionInput(s, 0.2 + 0.01 * k, reason="candidate", strategy="max_force_dev")
            for k, s in enumerate(sids)
        ],
        iteration_id=it.id,
    )
    return store, campaign, it, frames, sids


def test_request_is_idempotent_per_structure_labeler_settings(setup):
    store, c, it, _, sids = setup
    a = store.request_labels(
        c.id,
        sids,
        labeler="mock",
        settings_hash="h1",
        labeler_version="1.0",
        settings={"ecut": 30},
        iteration_id=it.id,
    )
    b = store.request_labels(c.id, sids[:3], labeler="mock", settings_hash="h1")
    other = store.request_labels(c.id, sids[:2], labeler="mock", settings_hash="h2")
    assert a[:3] == b and len(set(a)) == 6 and not set(other) & set(a)
    assert store.count_labels(c.id) == {"pending": 8, "running": 0, "done": 0, "failed": 0}
    lb = store.get_label(a[0])
    assert (lb.labeler, lb.labeler_version, lb.settings, lb.iteration_id) == (
        "mock",
        "1.0",
        {"ecut": 30},
        it.id,
    )
    assert len(store.list_selections(c.id)) == 6  # already selected: no extra selection


def test_claim_result_failure_and_provenance(setup):
    store, c, it, frames, sids = setup
    lids = store.request_labels(c.id, sids, labeler="mock", settings_hash="h1", iteration_id=it.id)
    tasks = store.claim_labels(limit=4, labeler="mock", worker="w1")
    assert [t.label_id for t in tasks] == lids[:4]
    assert np.array_equal(tasks[0].atoms.positions, frames[0].positions)
    assert all(store.get_label(t.label_id).claims == 1 for t in tasks)
    assert all(t.attempts == 0 and t.worker == "w1" for t in tasks)  # no DFT run yet
    assert store.claim_labels(limit=10, labeler="other") == []
    e, f, s = make_result(frames[0])
    runs = [
        AttemptInput(0, "scf_unconverged", "not converged in 100", 5.0, {"mixing": 0.7}),
        AttemptInput(1, "ok", None, 7.5, {"mixing": 0.35}, {"mixing": 0.35}),
    ]
    done = store.store_result(
        lids[0], energy=e, forces=f, stress=s, wall_time=12.5, host="node7", attempts=runs
    )
    assert (done.status, done.host, done.wall_time, done.worker) == ("done", "node7", 12.5, "w1")
    assert done.attempts == 2  # DFT runs, one row each
    hist = store.list_label_attempts(lids[0])
    assert [(a.attempt, a.status, a.settings) for a in hist] == [
        (0, "scf_unconverged", {"mixing": 0.7}),
        (1, "ok", {"mixing": 0.35}),
    ]
    # a retried commit of the same outcome changes nothing; a different result is refused
    again = store.store_result(lids[0], energy=e, forces=f, stress=s, attempts=runs)
    assert again.attempts == 2 and len(store.list_label_attempts(lids[0])) == 2
    assert done.finished_at is not None and done.claimed_at is not None
    failed = store.store_failure(
        lids[1], kind="scf_unconverged", message="SCF not converged in 100"
    )
    assert (failed.status, failed.failure_kind) == ("failed", "scf_unconverged")
    assert failed.failure_message == "SCF not converged in 100" and failed.energy is None
    with pytest.raises(LabelStateError, match="done"):
        store.store_result(lids[0], energy=e + 1.0, forces=f)
    with pytest.raises(LabelStateError, match="failed"):
        store.store_failure(lids[1], kind="crashed")
    # 3x3 stress is converted to Voigt xx yy zz yz xz xy
    sig = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    rec = store.store_result(lids[2], energy=e, forces=f, stress=sig)
    assert rec.stress.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_requeue_running_and_failed(setup):
    store, c, _it, _, sids = setup
    lids = store.request_labels(c.id, sids, labeler="mock", settings_hash="h1")
    store.claim_labels(limit=3)
    assert store.requeue_running(c.id, older_than=timedelta(hours=1)) == 0
    assert store.requeue_running(c.id, older_than=timedelta(0)) == 3
    assert store.count_labels(c.id)["pending"] == 6
    again = store.claim_labels(limit=1)
    assert again[0].label_id == lids[0] and store.get_label(lids[0]).claims == 2
    two_runs = [AttemptInput(0, "timeout", "walltime"), AttemptInput(1, "timeout", "walltime")]
    store.store_failure(lids[0], kind="timeout", message="walltime", attempts=two_runs)
    (t,) = store.claim_labels(limit=1)
    store.store_failure(t.label_id, kind="invalid_input", message="bad")
    assert store.requeue_failed(c.id, kinds=["timeout"], max_attempts=2) == 0  # 2 runs used
    assert store.requeue_failed(c.id, max_attempts=3) == 1  # invalid_input is never requeued
    lb = store.get_label(lids[0])
    assert (lb.status, lb.failure_kind, lb.retry_round, lb.attempts) == ("pending", None, 1, 2)
    assert [a.status for a in store.list_label_attempts(lids[0])] == ["timeout", "timeout"]
    assert store.get_label(t.label_id).status == "failed"
    assert store.requeue_failed(c.id, skip_kinds=()) == 1  # on request, even invalid input


def test_training_set_only_done_labels_of_campaign_labeler_and_settings(setup):
    store, c, _it, frames, sids = setup
    lids = store.request_labels(c.id, sids, labeler="mock", settings_hash="h1")
    other_settings = store.request_labels(c.id, sids[:2], labeler="mock", settings_hash="h2")
    other_c = store.create_campaign("other")
    foreign_sid = store.add_structure(make_atoms(77), campaign=other_c.id)
    foreign = store.request_labels(other_c.id, [foreign_sid], labeler="mock", settings_hash="h1")
    for t in store.claim_labels(limit=100):
        if t.label_id == lids[1]:
            store.store_failure(t.label_id, kind="crashed", message="segfault")
        else:
            e, f, s = make_result(t.atoms, t.label_id)
            store.store_result(t.label_id, energy=e, forces=f, stress=s)
    ts = store.training_set(c.id, labeler="mock", settings_hash="h1")
    assert [x.label.id for x in ts] == [lids[0], *lids[2:]]
    assert store.training_label_ids(c.id, labeler="mock", settings_hash="h1").tolist() == [
        lids[0],
        *lids[2:],
    ]
    assert [
        x.label.id for x in store.training_set(c.id, labeler="mock", settings_hash="h2")
    ] == other_settings
    assert [
        x.label.id for x in store.training_set(other_c.id, labeler="mock", settings_hash="h1")
    ] == foreign
    # A structure shared by two campaigns is labelled once and counted by both once selected.
    store.record_selections(other_c.id, [SelectionInput(sids[0], reason="shared")])
    assert lids[0] in store.training_label_ids(other_c.id, labeler="mock", settings_hash="h1")
    x = ts[0]
    assert np.array_equal(x.structure.positions, frames[0].positions)
    atoms = labelled_atoms(x, campaign="cu")
    assert atoms.calc is None and "energy" not in atoms.info and "forces" not in atoms.arrays
    assert atoms.info["REF_energy"] == x.label.energy
    assert np.array_equal(atoms.arrays["REF_forces"], x.label.forces)


def test_paging_labels_by_status(setup):
    store, c, it, _, sids = setup
    lids = store.request_labels(c.id, sids, labeler="mock", settings_hash="h1", iteration_id=it.id)
    store.claim_labels(limit=2)
    assert [x.id for x in store.list_labels(c.id, status="pending", limit=2)] == lids[2:4]
    assert [x.id for x in store.list_labels(c.id, status="pending", offset=2, limit=2)] == lids[4:6]
    assert [x.id for x in store.list_labels(c.id, status="running")] == lids[:2]
    assert len(store.list_labels(iteration_id=it.id, limit=None)) == 6


def test_stale_worker_cannot_overwrite_a_reclaimed_label(setup):
    store, c, _, frames, sids = setup
    (lid,) = store.request_labels(c.id, sids[:1], labeler="mock", settings_hash="h1")
    store.claim_labels(worker="old")
    store.requeue_running(c.id)
    store.claim_labels(worker="new")
    e, f, _ = make_result(frames[0])
    with pytest.raises(LabelStateError, match="'new', not 'old'"):
        store.store_result(lid, energy=e, forces=f, worker="old")
    assert store.store_result(lid, energy=e, forces=f, worker="new").status == "done"


def test_claim_query_uses_skip_locked_on_postgres(setup):
    from sqlalchemy import event

    store, c, _, _, sids = setup
    store.request_labels(c.id, sids, labeler="mock", settings_hash="h1")
    seen: list[str] = []

    def capture(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        store.claim_labels(limit=2)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    sql = " ".join(seen).upper()
    if store.backend == "postgresql":
        assert "FOR UPDATE SKIP LOCKED" in sql
    else:
        assert "BEGIN IMMEDIATE" in sql


def test_campaign_claims_labels_of_structures_it_shares(setup):
    store, a, _, _, sids = setup
    (label_id,) = store.request_labels(a.id, sids[:1], labeler="mock", settings_hash="h")
    b = store.create_campaign("shares-with-a")
    other = store.create_campaign("unrelated")
    # b selects the same structure: the existing label is reused, owned by a
    assert store.request_labels(b.id, sids[:1], labeler="mock", settings_hash="h") == [label_id]
    assert store.claim_labels(campaign=other.id, labeler="mock") == []
    (task,) = store.claim_labels(campaign=b.id, labeler="mock")
    assert task.label_id == label_id
    assert store.claim_labels(campaign=a.id, labeler="mock") == []  # already running
