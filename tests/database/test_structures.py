"""Structures: stored once per canonical hash, origin kept, ase.Atoms round trip."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from database import NotFoundError, Origin, SelectionInput, Store

from .conftest import make_atoms


def test_same_structure_twice_is_stored_once(store, campaign):
    a = make_atoms(1)
    first = store.add_structure(a, campaign=campaign.id, origin=Origin(walker="w0"))
    second = store.add_structure(a.copy(), campaign=campaign.id, origin=Origin(walker="w1"))
    ids = store.add_structures([make_atoms(2), a, make_atoms(2)])
    assert first == second == ids[1]
    assert ids[0] == ids[2] != first
    assert store.count_structures() == 2
    assert store.get_structure(first).walker == "w0"  # the first origin is kept
    assert store.find_structure(a) == first
    assert store.find_structure(make_atoms(99)) is None
    store.record_selections(campaign.id, [SelectionInput(first)])
    assert store.count_structures(campaign.id) == 1
    assert [x.id for x in store.list_structures(campaign.id)] == [first]
    assert [x.id for x in store.list_structures(offset=1, limit=1)] == [ids[0]]


def test_atoms_round_trip_and_origin(store, campaign):
    it = store.start_iteration(campaign.id)
    a = make_atoms(5, symbols="Au")
    a.pbc = [True, True, False]
    (sid,) = store.add_structures(
        [a],
        campaign=campaign.id,
        iteration_id=it.id,
        origins=[
            Origin(
                walker="T600-0",
                temperature=600.0,
                pressure=0.0,
                md_step=1234,
                info={"thermostat": "langevin"},
            )
        ],
    )
    rec = store.get_structure(sid)
    assert (rec.origin_campaign_id, rec.origin_iteration_id) == (campaign.id, it.id)
    assert (rec.walker, rec.temperature, rec.md_step) == ("T600-0", 600.0, 1234)
    assert rec.info == {"thermostat": "langevin"}
    assert rec.formula == a.get_chemical_formula() and rec.natoms == len(a)
    (back,) = store.get_atoms([sid])
    assert back.get_chemical_symbols() == a.get_chemical_symbols()
    assert np.array_equal(back.positions, a.positions)
    assert np.array_equal(back.cell.array, a.cell.array)
    assert back.pbc.tolist() == [True, True, False]


def test_unknown_structure(store):
    with pytest.raises(NotFoundError, match="12345"):
        store.get_structure(12345)


def test_concurrent_inserts_of_the_same_structures_store_each_once(db_url):
    frames = [make_atoms(i, n_cells=1) for i in range(150)]
    results: list[list[int]] = []
    errors: list[BaseException] = []
    stores = [Store.from_url(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)

    def work(st: Store) -> None:
        try:
            barrier.wait()
            results.append(st.add_structures(frames))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for st in stores:
        st.close()
    assert not errors
    assert results[0] == results[1]
    with Store.from_url(db_url, migrate=False) as st:
        assert st.count_structures() == 150


def test_formula_matches_ase():
    from ase import Atoms

    from database.store import hill_formula

    for sym in ["Cu32", "H2O", "CH4", "C2H5OH", "NaCl", "AuCu3", "OCH2", "SiO2C", "Fe"]:
        a = Atoms(sym)
        assert hill_formula(a.numbers) == a.get_chemical_formula(), sym
