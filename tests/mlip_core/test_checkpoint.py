"""Checkpoint round trip: bit-identical predictions, weights_only loading, bad files, and the
sha256 / integrity checks on every load."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mlip_core.checkpoint import (
    CheckpointIntegrityError,
    file_sha256,
    load_calculator,
    load_committee,
    save_committee,
)
from mlip_core.neighbors import build_graph

from .conftest import random_structure


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bit_identical(model64, tmp_path, dtype):
    model = model64.select_members([0, 1, 2]).to(dtype)
    at = random_structure(["Cu"] * 6 + ["O"] * 3 + ["H"] * 2, seed=4)
    meta = {
        "training_label_ids": [3, 5, 8],
        "metrics": {"force_rmse": 0.012},
        "calibration": {"method": "scale", "scale": 3.9},
    }
    sha = save_committee(model, tmp_path / "c.pt", meta)
    loaded, got = load_committee(tmp_path / "c.pt")
    assert got["sha256"] == sha and len(sha) == 64
    assert got["training_label_ids"] == [3, 5, 8]
    assert got["calibration"]["scale"] == 3.9
    assert "torch" in got["versions"]
    assert loaded.dtype == dtype and loaded.config == model.config
    g = build_graph(at, model.cutoff, model.species_index, dtype=dtype)
    a = model.predict(g, compute_stress=True)
    b = loaded.predict(g, compute_stress=True)
    for x, y in ((a.energy, b.energy), (a.forces, b.forces), (a.stress, b.stress)):
        assert torch.equal(x, y)  # bit-identical
    torch.load(tmp_path / "c.pt", weights_only=True)  # loadable without unpickling code


def test_calculator_loader(model64, tmp_path):
    save_committee(model64, tmp_path / "c.pt")
    calc = load_calculator(tmp_path / "c.pt")
    at = random_structure(["Cu"] * 4 + ["H"] * 2, seed=1)
    at.calc = calc
    ref = model64.predict(build_graph(at, 5.0, model64.species_index)).energy.mean().item()
    assert at.get_potential_energy() == ref
    assert np.isfinite(calc.get_property("max_force_dev", at))


def test_bad_checkpoints(model64, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_committee(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointIntegrityError, match="not a readable"):
        load_committee(junk)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointIntegrityError, match="not a pesflow"):
        load_committee(tmp_path / "other.pt")
    torch.save({"format": "pesflow-committee", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99 not supported"):
        load_committee(tmp_path / "future.pt")
    with pytest.raises(TypeError, match=r"metadata\.obj"):
        save_committee(model64, tmp_path / "x.pt", {"obj": object()})


def _flip_a_weight(model, path):
    """Flip an exponent bit of the largest float tensor's first value in the file's bytes:
    the zip archive stays valid (torch.load reads it), the weight becomes absurd."""
    name, t = max(
        ((k, v) for k, v in model.state_dict().items() if v.is_floating_point()),
        key=lambda kv: kv[1].numel(),
    )
    data = bytearray(path.read_bytes())
    raw = t.detach().contiguous().numpy().tobytes()
    at = bytes(data).find(raw)
    assert at > 0 and bytes(data).find(raw, at + 1) < 0
    data[at + t.element_size() - 1] ^= 0x40
    path.write_bytes(bytes(data))
    return name


def test_a_bit_flipped_checkpoint_is_refused_when_its_sha256_is_given(model64, tmp_path):
    path = tmp_path / "c.pt"
    sha = save_committee(model64, path)
    name = _flip_a_weight(model64, path)
    # without the recorded hash the flip goes unnoticed: it loads, with a wrong weight
    loaded, meta = load_committee(path)
    assert not torch.equal(loaded.state_dict()[name], model64.state_dict()[name])
    assert meta["sha256"] == file_sha256(path) != sha
    with pytest.raises(CheckpointIntegrityError) as err:
        load_committee(path, expected_sha256=sha)
    msg = str(err.value)
    assert str(path) in msg and sha[:12] in msg and file_sha256(path)[:12] in msg
    assert err.value.expected_sha256 == sha and err.value.found_sha256 == file_sha256(path)
    assert isinstance(err.value, ValueError)
    with pytest.raises(CheckpointIntegrityError, match="expected sha256"):
        load_calculator(path, expected_sha256=sha)


def test_the_recorded_sha256_lets_an_intact_checkpoint_load(model64, tmp_path):
    sha = save_committee(model64, tmp_path / "c.pt")
    _, meta = load_committee(tmp_path / "c.pt", expected_sha256=sha.upper())
    assert meta["sha256"] == sha
    calc = load_calculator(tmp_path / "c.pt", expected_sha256=sha)
    assert calc.model.n_members == model64.n_members
    with pytest.raises(ValueError, match="64 hex digits"):
        load_committee(tmp_path / "c.pt", expected_sha256=sha[:12])


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_a_truncated_checkpoint_is_an_integrity_error_with_or_without_sha(model64, tmp_path, keep):
    path = tmp_path / "c.pt"
    sha = save_committee(model64, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    for expected in (None, sha):
        with pytest.raises(CheckpointIntegrityError, match=re.escape(str(path))):
            load_committee(path, expected_sha256=expected)
    with pytest.raises(CheckpointIntegrityError, match="truncated or unreadable"):
        load_committee(path)


def test_a_missing_checkpoint_is_file_not_found_even_with_a_sha(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_committee(tmp_path / "gone.pt", expected_sha256="0" * 64)
