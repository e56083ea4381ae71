"""Exploration progress as rows: walkers finishing at the same moment lose nothing, on SQLite
and on PostgreSQL (the JSON read-modify-write it replaces lost 57 of 80 entries on PostgreSQL).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from database import Origin, Store, WalkerOutcome

from .conftest import make_atoms

N_WALKERS = 8
ROUNDS = 20


def _outcome(walker: int, rnd: int) -> WalkerOutcome:
    offers = tuple(
        (
            make_atoms(1000 * rnd + 10 * walker + k, n_cells=1),
            Origin(walker=f"w{walker}", temperature=300.0 + walker, md_step=10 * k),
            0.1 + 0.01 * k,
            0.2 + 0.01 * k,
            k == 2,
        )
        for k in range(3)
    )
    devs = np.linspace(0.0, 0.3, 5) + walker
    return WalkerOutcome(
        walker=walker,
        temperature=300.0 + walker,
        n_frames=5,
        n_accurate=2,
        n_candidate=2,
        n_failed=1,
        stopped_early=True,
        stop_reason="max force deviation above 0.5 eV/Å",
        max_force_devs=devs,
        offers=offers,
    )


def test_eight_walkers_finishing_together_lose_nothing(db_url):
    """8 threads, each with its own Store (its own connection pool), record their walkers at
    the same instant (a barrier), 20 rounds (iterations)."""
    stores = [Store.from_url(db_url, migrate=False) for _ in range(N_WALKERS)]
    try:
        c = stores[0].create_campaign("race")
        errors: list[BaseException] = []
        for rnd in range(ROUNDS):
            it = stores[0].start_iteration(c.id, rnd)
            barrier = threading.Barrier(N_WALKERS)

            def finish(w: int, it_id: int = it.id, rnd: int = rnd, barrier=barrier) -> None:
                try:
                    barrier.wait(timeout=30)
                    stores[w].record_walker_run(it_id, _outcome(w, rnd))
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=finish, args=(w,)) for w in range(N_WALKERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert not errors, errors
            runs = stores[0].list_walker_runs(it.id)
            assert [r.walker for r in runs] == list(range(N_WALKERS))
            cands = stores[0].list_candidates(it.id)
            assert len(cands) == 3 * N_WALKERS
            assert sum(c.cut for c in cands) == N_WALKERS
            for r in runs:
                assert r.max_force_devs.tolist() == (np.linspace(0.0, 0.3, 5) + r.walker).tolist()
        total = sum(len(stores[0].list_walker_runs(i.id)) for i in stores[0].list_iterations(c.id))
        assert total == N_WALKERS * ROUNDS
    finally:
        for s in stores:
            s.close()


def test_recording_a_walker_again_changes_nothing(store, campaign):
    it = store.start_iteration(campaign.id)
    first = store.record_walker_run(it.id, _outcome(3, 0))
    again = store.record_walker_run(it.id, _outcome(3, 0).__class__(walker=3, n_frames=99))
    assert again.id == first.id and again.n_frames == 5  # first write wins (a killed rerun)
    assert len(store.list_candidates(it.id)) == 3
    structures = {c.structure_id for c in store.list_candidates(it.id)}
    origin = store.get_structure(min(structures))
    assert origin.walker == "w3" and origin.source == "md" and origin.origin_iteration_id == it.id


def test_walker_run_validates_before_writing(store, campaign):
    it = store.start_iteration(campaign.id)
    bad = _outcome(0, 0)
    bad = WalkerOutcome(walker=0, offers=((bad.offers[0][0], None, float("nan"), 0.1, False),))
    with pytest.raises(ValueError, match="finite"):
        store.record_walker_run(it.id, bad)
    with pytest.raises(ValueError, match="walker status"):
        store.record_walker_run(it.id, WalkerOutcome(walker=0, status="lost"))
    assert store.list_walker_runs(it.id) == [] and store.count_structures() == 0
