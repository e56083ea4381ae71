"""Bad input raises a clear DatabaseInputError (a ValueError) and leaves the database unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from database import (
    DatabaseInputError,
    NotFoundError,
    SelectionInput,
    Store,
    UnknownCampaignError,
)

from .conftest import make_atoms, make_result

TABLES = ("campaigns", "iterations", "structures", "selections", "labels", "models")


def snapshot(store: Store) -> dict[str, list]:
    with store.session(write=False) as s:
        return {
            t: [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in s.execute(text(f"SELECT * FROM {t} ORDER BY id"))
            ]
            for t in TABLES
        }


@pytest.fixture
def world(store, campaign):
    it = store.start_iteration(campaign.id)
    frames = [make_atoms(i) for i in range(3)]
    sids = store.add_structures(frames, campaign=campaign.id, iteration_id=it.id)
    lids = store.request_labels(campaign.id, sids, labeler="mock", settings_hash="h")
    store.claim_labels(limit=3)
    other = store.create_campaign("other")
    return store, campaign, it, frames, sids, lids, other


def _nan_forces(n):
    f = np.zeros((n, 3))
    f[3, 1] = np.nan
    return f


CASES = {
    "forces wrong shape": (
        lambda w: w[0].store_result(w[5][0], energy=-1.0, forces=np.zeros((len(w[3][0]) - 1, 3))),
        DatabaseInputError,
        r"shape \(31, 3\), expected \(32, 3\)",
    ),
    "forces transposed": (
        lambda w: w[0].store_result(w[5][0], energy=-1.0, forces=np.zeros((3, 32))),
        DatabaseInputError,
        "shape",
    ),
    "NaN energy": (
        lambda w: w[0].store_result(w[5][0], energy=float("nan"), forces=np.zeros((32, 3))),
        DatabaseInputError,
        "energy: not finite",
    ),
    "NaN in forces": (
        lambda w: w[0].store_result(w[5][0], energy=-1.0, forces=_nan_forces(32)),
        DatabaseInputError,
        r"atom indices \[3\]",
    ),
    "result without forces": (
        lambda w: w[0].store_result(w[5][0], energy=-1.0, forces=None),
        DatabaseInputError,
        "forces: missing",
    ),
    "stress wrong shape": (
        lambda w: w[0].store_result(
            w[5][0], energy=-1.0, forces=np.zeros((32, 3)), stress=np.zeros(5)
        ),
        DatabaseInputError,
        "stress: shape",
    ),
    "unknown failure kind": (
        lambda w: w[0].store_failure(w[5][0], kind="oops"),
        DatabaseInputError,
        "failure kind 'oops'",
    ),
    "unknown label": (
        lambda w: w[0].store_result(99999, energy=-1.0, forces=np.zeros((32, 3))),
        NotFoundError,
        "99999",
    ),
    "unknown campaign (structures)": (
        lambda w: w[0].add_structures([make_atoms(9)], campaign="nope"),
        UnknownCampaignError,
        "'nope'",
    ),
    "unknown campaign (labels)": (
        lambda w: w[0].request_labels("nope", w[4], labeler="m", settings_hash="h"),
        UnknownCampaignError,
        "'nope'",
    ),
    "unknown campaign (id)": (lambda w: w[0].start_iteration(4242), UnknownCampaignError, "4242"),
    "unknown structure in request": (
        lambda w: w[0].request_labels(w[1].id, [w[4][0], 777], labeler="other", settings_hash="h"),
        NotFoundError,
        "777",
    ),
    "NaN position in a batch": (
        lambda w: w[0].add_structures([make_atoms(10), _with_nan(make_atoms(11)), make_atoms(12)]),
        DatabaseInputError,
        r"structure 1: non-finite positions at atom indices \[2\]",
    ),
    "iteration of another campaign": (
        lambda w: w[0].record_selections(w[6].id, [SelectionInput(w[4][0])], iteration_id=w[2].id),
        DatabaseInputError,
        "belongs to campaign",
    ),
    "negative count": (
        lambda w: w[0].update_iteration(w[2].id, n_accurate=-1),
        DatabaseInputError,
        "n_accurate",
    ),
    "config not JSON": (
        lambda w: w[0].create_campaign("x", {"f": object()}),
        DatabaseInputError,
        "not JSON",
    ),
}


def _with_nan(atoms):
    atoms.positions[2, 0] = np.nan
    return atoms


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_and_changes_nothing(world, case):
    store = world[0]
    fn, exc, pattern = CASES[case]
    before = snapshot(store)
    with pytest.raises(exc, match=pattern) as info:
        fn(world)
    assert isinstance(info.value, ValueError)
    assert snapshot(store) == before


def test_bulk_labelled_with_one_nan_energy_stores_nothing(world):
    store, c = world[0], world[1]
    frames = [make_atoms(100 + i) for i in range(10)]
    res = [make_result(a, i) for i, a in enumerate(frames)]
    energies = [r[0] for r in res]
    energies[7] = float("nan")
    before = snapshot(store)
    with pytest.raises(DatabaseInputError, match="structure 7: energy: not finite"):
        store.add_labelled(
            c.id,
            frames,
            energies=energies,
            forces=[r[1] for r in res],
            labeler="mock",
            settings_hash="seed",
        )
    assert snapshot(store) == before
