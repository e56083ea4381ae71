"""Binary array codec: bit-exact round trips, and arrays stored as binary in the database."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sqlalchemy import text

from database import SelectionInput, WalkerOutcome, decode_array, encode_array

from .conftest import make_atoms


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=7),
        elements=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    )
)
def test_float64_round_trip_is_bit_exact(arr):
    out = decode_array(encode_array(arr))
    assert _same_bits(arr, out)
    assert out.flags.writeable


def test_special_values_and_nan_payload_survive():
    weird = np.array([-0.0, 5e-324, np.inf, -np.inf, 1.0000000000000002, np.pi])
    payload_nan = np.frombuffer(np.uint64(0x7FF8_0000_DEAD_BEEF).tobytes(), dtype=np.float64)
    arr = np.concatenate([weird, payload_nan])
    assert _same_bits(arr, decode_array(encode_array(arr)))


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.array([29, 79, 1], dtype=np.int32),
        np.array([True, False, True]),
        np.zeros((0, 3)),
    ],
)
def test_other_dtypes_round_trip(arr):
    assert _same_bits(arr, decode_array(encode_array(arr)))


def test_encoding_is_compact():
    forces = np.random.default_rng(0).normal(size=(108, 3))
    blob = encode_array(forces)
    assert len(blob) == 108 * 3 * 8 + 4 + 2 + 2 * 4  # raw float64 + small header


def test_rejects_non_numeric():
    with pytest.raises(ValueError, match="dtype"):
        encode_array(np.array(["a", "b"]))


def test_store_round_trip_every_array_bit_exact(store, campaign):
    atoms = make_atoms(3)
    rng = np.random.default_rng(7)
    atoms.positions = rng.normal(scale=5.0, size=atoms.positions.shape)
    atoms.positions[0] = [-0.0, 5e-324, 1.0000000000000002]
    atoms.cell = rng.normal(scale=4.0, size=(3, 3)) + np.eye(3) * 10
    atoms.pbc = [True, False, True]
    it = store.start_iteration(campaign.id)
    (sid,) = store.add_structures([atoms], campaign=campaign.id, iteration_id=it.id)
    fstd = rng.exponential(size=len(atoms))
    store.record_selections(
        campaign.id, [SelectionInput(sid, 0.31, 0.02, fstd)], iteration_id=it.id
    )
    (lid,) = store.request_labels(campaign.id, [sid], labeler="mock", settings_hash="s")
    forces = rng.normal(size=(len(atoms), 3))
    forces[1] = [np.nextafter(0, 1), -0.0, 1e308]
    stress = rng.normal(size=6) * 1e-3
    energy = float(rng.normal()) * 1e3
    store.store_result(lid, energy=energy, forces=forces, stress=stress)
    devs = rng.exponential(size=1000)
    devs[3] = np.nan  # a frame whose deviation was not finite
    store.record_walker_run(it.id, WalkerOutcome(walker=0, n_frames=1000, max_force_devs=devs))
    m = store.record_model(
        campaign.id,
        member_count=4,
        checkpoint_uri="file:///ckpt.pt",
        checkpoint_sha256="a" * 64,
        training_label_ids=[lid, 2**40],
    )

    s = store.get_structure(sid)
    assert _same_bits(s.positions, atoms.positions)
    assert _same_bits(s.cell, atoms.cell.array)
    assert s.pbc.tolist() == [True, False, True]
    assert s.numbers.tolist() == atoms.numbers.tolist()
    lb = store.get_label(lid)
    assert _same_bits(lb.forces, forces)
    assert _same_bits(lb.stress, stress)
    assert lb.energy == energy
    sel = store.list_selections(campaign.id)[0]
    assert _same_bits(sel.forces_std, fstd)
    assert _same_bits(store.list_walker_runs(it.id)[0].max_force_devs, devs)
    assert store.list_models(campaign.id)[0].training_label_ids.tolist() == [lid, 2**40]
    assert m.training_label_ids.dtype == np.int64

    # Stored as raw binary (not JSON text): the column holds 8 bytes per float plus a header.
    with store.session(write=False) as sess:
        raw = sess.execute(text("SELECT forces FROM labels WHERE id = :i"), {"i": lid}).scalar()
    assert isinstance(raw, bytes | memoryview)
    assert len(bytes(raw)) == len(encode_array(forces))
