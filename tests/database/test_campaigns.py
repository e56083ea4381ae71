"""Campaigns, iterations and dashboard metrics, models, API tokens."""

from __future__ import annotations

import numpy as np
import pytest

from database import (
    DuplicateError,
    NotFoundError,
    SelectionInput,
    UnknownCampaignError,
    WalkerOutcome,
)
from database.queries import summary_rows

from .conftest import make_atoms, make_result


def test_campaign_lifecycle(store):
    c = store.create_campaign("cu", {"T": [300.0], "nested": {"k": 1}})
    assert (c.status, c.config) == ("created", {"T": [300.0], "nested": {"k": 1}})
    assert c.created_at.tzinfo is not None
    with pytest.raises(DuplicateError, match="cu"):
        store.create_campaign("cu")
    assert store.create_campaign("cu", exist_ok=True).id == c.id
    running = store.acquire_lease("cu", token="t1", host="h", pid=1, purpose="test", ttl_s=60)
    assert running.status == "running"
    assert running.started_at is not None and running.finished_at is None
    done = store.release_lease(c.id, "t1", status="converged", message="accurate ratio 0.99")
    assert done.finished_at is not None and done.status_message == "accurate ratio 0.99"
    assert done.status == "converged" and done.lease is None
    with pytest.raises(ValueError, match="bogus"):
        store.set_campaign_status(c.id, "bogus")
    assert [x.name for x in store.list_campaigns()] == ["cu"]
    with pytest.raises(UnknownCampaignError, match="nope"):
        store.get_campaign("nope")


def test_iterations_metrics_and_histogram(store, campaign):
    it0 = store.start_iteration(campaign.id)
    assert (it0.index, it0.status) == (0, "running")
    assert store.start_iteration(campaign.id, 0).id == it0.id  # idempotent on resume
    store.record_step_time(it0.id, "train", 10.0)
    store.record_step_time(it0.id, "train", 2.5, complete=True)
    store.record_step_time(it0.id, "explore", 30.0)
    assert store.get_iteration(campaign.id, 0).completed_steps == {"train"}
    devs = np.linspace(0.0, 1.0, 101)
    store.record_walker_run(
        it0.id, WalkerOutcome(walker=0, n_frames=61, max_force_devs=devs[:61], stopped_early=True)
    )
    store.record_walker_run(
        it0.id, WalkerOutcome(walker=1, n_frames=40, max_force_devs=np.r_[devs[61:], np.nan])
    )
    store.record_walker_run(it0.id, WalkerOutcome(walker=2, status="failed", error="boom"))
    store.update_iteration(
        it0.id, n_explored=100, n_accurate=70, n_candidate=25, n_failed=5, complete_step="explore"
    )
    store.record_model(
        campaign.id,
        iteration_id=it0.id,
        member_count=4,
        checkpoint_uri="campaigns/cu/models/iter-000.pt",
        checkpoint_sha256="0" * 64,
        training_label_ids=[],
        validation={"force_rmse": 0.12, "energy_rmse": 0.004},
    )
    store.finish_iteration(it0.id, "continue: accurate fraction 0.7 < 0.9")
    sids = store.add_structures(
        [make_atoms(i) for i in range(3)], campaign=campaign.id, iteration_id=it0.id
    )
    store.record_selections(
        campaign.id, [SelectionInput(s, 0.3) for s in sids], iteration_id=it0.id
    )
    lids = store.request_labels(
        campaign.id, sids, labeler="mock", settings_hash="h", iteration_id=it0.id
    )
    t = store.claim_labels()[0]
    e, f, _ = make_result(t.atoms)
    store.store_result(t.label_id, energy=e, forces=f)
    it1 = store.start_iteration(campaign.id)
    assert it1.index == 1 and store.latest_iteration(campaign.id).id == it1.id

    m0, m1 = store.iteration_metrics(campaign.id)
    assert m0.step_timings == {"train": 12.5, "explore": 30.0, "decide": 0.0}
    assert (m0.walkers, m0.walkers_cut, m0.walkers_failed) == (3, 1, 1)
    assert m0.decision == "continue: accurate fraction 0.7 < 0.9"
    assert (m0.n_accurate, m0.n_candidate, m0.n_failed, m0.n_selected) == (70, 25, 5, 3)
    assert (m0.accurate_fraction, m0.candidate_fraction) == (0.7, 0.25)
    assert m0.validation == {"force_rmse": 0.12, "energy_rmse": 0.004}
    assert m0.labels == {"pending": 2, "running": 0, "done": 1, "failed": 0}
    assert m0.status == "done" and m0.finished_at is not None
    assert m1.candidate_fraction is None and m1.labels["pending"] == 0
    # the one per-iteration summary and its table rows (workflows' summary tables)
    assert (m0.labels_new, m0.labels_total, m0.labels_failed) == (1, 1, 0)
    assert m1.labels_total == 1 and m0.failed_fraction == 0.05 and m1.failed_fraction is None
    row0, row1 = summary_rows(store, campaign.id)
    assert row0 == {
        "iteration": 0,
        "status": "done",
        "labels_new": 1,
        "labels_total": 1,
        "labels_failed": 0,
        "n_explored": 100,
        "accurate": 0.7,
        "candidate": 0.25,
        "failed": 0.05,
        "cut_walkers": 1,
        "failed_walkers": 1,
        "val_force_rmse_meV": None,
        "val_energy_rmse_meV": None,
        "epochs": None,
        "max_epochs": None,
        "time_capped": False,
        "timings": {"train": 12.5, "explore": 30.0, "decide": 0.0},
        "val_regimes": {},  # the model row has no per-regime errors
    }
    assert row1["iteration"] == 1 and row1["accurate"] is None
    counts, edges = store.force_deviation_histogram(it0.id, bins=10, range=(0.0, 1.0))
    assert counts.sum() == 101 and edges[0] == 0.0 and edges[-1] == 1.0
    assert len(lids) == 3
    with pytest.raises(NotFoundError):
        store.get_iteration(campaign.id, 7)


def test_models_and_tokens(store, campaign):
    it = store.start_iteration(campaign.id)
    m = store.record_model(
        campaign.id,
        iteration_id=it.id,
        member_count=4,
        checkpoint_uri="/data/ckpt/it0.pt",
        checkpoint_sha256="0" * 64,
        training_label_ids=np.arange(5),
        validation={"force_rmse": 0.1},
    )
    assert store.latest_model(campaign.id).id == m.id
    assert m.training_label_ids.tolist() == [0, 1, 2, 3, 4] and m.member_count == 4
    tok = store.add_api_token("ci", "s3cret")
    assert tok.token_sha256 != "s3cret" and len(tok.token_sha256) == 64
    assert store.verify_api_token("s3cret").name == "ci"
    assert store.verify_api_token("wrong") is None
    store.revoke_api_token("ci")
    assert store.verify_api_token("s3cret") is None
    assert store.list_api_tokens()[0].revoked_at is not None
    with pytest.raises(DuplicateError):
        store.add_api_token("ci", "other")


def test_token_scope_and_expiry_are_checked(store):
    from datetime import UTC, datetime, timedelta

    from database import DatabaseInputError

    soon = datetime.now(UTC) + timedelta(hours=1)
    rec = store.add_api_token("r", "pf_r", scope="read", expires_at=soon)
    assert (rec.scope, rec.expires_at, rec.last_used_at) == ("read", soon, None)
    assert store.add_api_token("a", "pf_a").scope == "admin"  # the power tokens had before
    assert store.find_api_token("pf_r") == rec and store.find_api_token("pf_x") is None
    for kwargs, words in (
        ({"scope": "root"}, "token scope must be one of read, operate, admin"),
        ({"expires_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, "in the future"),
    ):
        with pytest.raises(DatabaseInputError, match=words):
            store.add_api_token("bad", "pf_bad", **kwargs)
    assert [t.name for t in store.list_api_tokens()] == ["r", "a"]
