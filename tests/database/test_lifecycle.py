"""Campaign status as a state machine and the one-writer lease, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from database import (
    CAMPAIGN_TRANSITIONS,
    LeaseHeldError,
    StatusConflictError,
    Store,
)
from database.models import CAMPAIGN_STATUSES

LEASE = {"host": "node1", "pid": 4242, "purpose": "run", "ttl_s": 60.0}


def test_transition_table_covers_every_status_and_terminal_states_are_final():
    assert set(CAMPAIGN_TRANSITIONS) == set(CAMPAIGN_STATUSES)
    assert CAMPAIGN_TRANSITIONS["cancelled"] == frozenset()
    assert CAMPAIGN_TRANSITIONS["converged"] == frozenset()
    for targets in CAMPAIGN_TRANSITIONS.values():
        assert targets <= set(CAMPAIGN_STATUSES)


def test_transitions_are_checked(store, campaign):
    assert store.transition_campaign(campaign.id, "paused", "by hand").status == "paused"
    assert store.transition_campaign(campaign.id, "queued").status == "queued"
    assert store.transition_campaign(campaign.id, "cancelled", "stop").status == "cancelled"
    for target in ("paused", "queued", "converged"):
        with pytest.raises(StatusConflictError, match="cancelled; it cannot become") as err:
            store.transition_campaign(campaign.id, target)
        assert (err.value.current, err.value.requested) == ("cancelled", target)
    with pytest.raises(ValueError, match="lease"):
        store.transition_campaign(campaign.id, "running")
    rec = store.get_campaign(campaign.id)
    assert rec.finished_at is not None and rec.status_message == "stop"


def test_lease_one_holder_and_takeover_after_expiry(store, campaign):
    rec = store.acquire_lease(campaign.id, token="a", **LEASE)
    assert rec.status == "running" and rec.lease.alive and rec.lease.token == "a"
    with pytest.raises(LeaseHeldError, match="node1 pid 4242 \\(run\\) since") as err:
        store.acquire_lease(campaign.id, token="b", **{**LEASE, "pid": 7})
    assert err.value.lease.token == "a"
    assert store.acquire_lease(campaign.id, token="a", **LEASE).lease.token == "a"  # re-entrant
    assert store.renew_lease(campaign.id, "a", 60.0) is not None
    assert store.renew_lease(campaign.id, "b", 60.0) is None
    # the holder dies: its lease expires, the campaign reads as interrupted (with the reason)
    store.renew_lease(campaign.id, "a", 0.2)
    time.sleep(0.4)
    dead = store.get_campaign(campaign.id)
    assert dead.status == "interrupted"
    assert "node1 pid 4242" in dead.status_message and "resume" in dead.status_message
    # and the next run takes it over without force; the old holder is fenced off
    took = store.acquire_lease(campaign.id, token="b", **{**LEASE, "pid": 7})
    assert took.status == "running" and took.lease.pid == 7
    assert store.renew_lease(campaign.id, "a", 60.0) is None
    old = store.release_lease(campaign.id, "a", status="converged")
    assert old.status == "running"  # a lost holder changes nothing
    fin = store.release_lease(campaign.id, "b", status="paused", message="max_iterations")
    assert (fin.status, fin.status_message, fin.lease) == ("paused", "max_iterations", None)


def test_pause_and_cancel_sent_while_running_are_kept_by_the_holder(store, campaign):
    store.acquire_lease(campaign.id, token="a", **LEASE)
    store.transition_campaign(campaign.id, "paused", "paused by alice")
    rec = store.release_lease(campaign.id, "a", status="converged", message="done")
    assert (rec.status, rec.status_message) == ("paused", "paused by alice")
    store.acquire_lease(campaign.id, token="b", **LEASE)
    store.transition_campaign(campaign.id, "cancelled", "cancelled by bob")
    assert store.release_lease(campaign.id, "b", status="paused").status == "cancelled"


def test_a_queued_run_honours_a_pause_sent_before_it_started(store, campaign):
    store.transition_campaign(campaign.id, "queued", "resume via API")
    store.transition_campaign(campaign.id, "paused", "paused via API")
    with pytest.raises(StatusConflictError, match="paused; not started"):
        store.acquire_lease(campaign.id, token="q", start_from=("queued",), **LEASE)
    assert store.get_campaign(campaign.id).status == "paused"
    assert store.get_lease(campaign.id) is None
    # an explicit `pesflow resume` of a paused campaign does start it
    assert store.acquire_lease(campaign.id, token="cli", **LEASE).status == "running"


@pytest.mark.parametrize("trial", range(20))
def test_cancel_wins_over_concurrent_pauses(db_url, trial):
    """A cancel sent together with pauses (each request its own connection) always ends
    cancelled, whatever the order the database serialises them in."""
    stores = [Store.from_url(db_url, migrate=False) for _ in range(5)]
    try:
        c = stores[0].create_campaign(f"race{trial}")
        stores[0].acquire_lease(c.id, token="holder", **LEASE)
        barrier = threading.Barrier(5)
        answers: dict[int, str] = {}

        def send(i: int) -> None:
            barrier.wait(timeout=30)
            target = "cancelled" if i == trial % 5 else "paused"
            try:
                answers[i] = stores[i].transition_campaign(c.id, target).status
            except StatusConflictError as exc:
                answers[i] = f"refused:{exc.current}"

        threads = [threading.Thread(target=send, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert answers[trial % 5] == "cancelled"
        # the holder ends its run afterwards: its final status does not undo the cancel
        end = stores[0].release_lease(c.id, "holder", status="paused")
        assert end.status == "cancelled"
        for i, a in answers.items():
            assert a in ("paused", "cancelled", "refused:cancelled"), (i, a)
    finally:
        for s in stores:
            s.close()


def test_a_queued_run_that_never_starts_can_be_marked_interrupted(store, campaign):
    store.transition_campaign(campaign.id, "queued", "queued via API by alice")
    rec = store.transition_campaign(
        campaign.id, "interrupted", "the queued API run did not start", allowed_from=("queued",)
    )
    assert rec.status == "interrupted"
    assert store.acquire_lease(campaign.id, token="t", **LEASE).status == "running"
