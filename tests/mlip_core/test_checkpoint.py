"""Checkpoint round trip: bit-identical predictions, weights_only loading, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip_core.checkpoint import load_calculator, load_committee, save_committee
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
    with pytest.raises(ValueError, match="not a readable"):
        load_committee(junk)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pesflow"):
        load_committee(tmp_path / "other.pt")
    with pytest.raises(TypeError, match=r"metadata\.obj"):
        save_committee(model64, tmp_path / "x.pt", {"obj": object()})
