"""The reduced demo campaign end to end through the Prefect flow and the CLI: it learns
(validation force RMSE falls >= 3x), stops by its convergence rule, exports a dataset that
plain ASE reads and a calculator that reproduces the committee."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pesflow.cli import app

from ._campaigns import write_config

runner = CliRunner()


@pytest.fixture(scope="module")
def campaign(prefect_harness, tmp_path_factory):
    """Run the reduced campaign once for the whole module."""
    root = tmp_path_factory.mktemp("campaign")
    cfg = write_config(root / "reduced.yaml")
    data = root / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    from database import Store
    from workflows.steps import summary_rows

    store = Store.sqlite(data)
    rec = store.get_campaign("reduced")
    rows = summary_rows(store, rec.id)
    yield {"result": res, "data": data, "store": store, "rec": rec, "rows": rows, "cfg": cfg}
    store.close()


def test_campaign_converges_and_learns(campaign):
    res, rec, rows = campaign["result"], campaign["rec"], campaign["rows"]
    assert res.exit_code == 0, res.output
    assert rec.status == "converged", rec.status_message
    assert rec.status_message.startswith("converged at iteration")
    assert len(rows) < 8  # stopped by the rule, not by max_iterations
    first, last = rows[0]["val_force_rmse_meV"], rows[-1]["val_force_rmse_meV"]
    assert first / last >= 3.0, [r["val_force_rmse_meV"] for r in rows]
    # the committee is uncertain about less and less of what it explores
    uncertain = [1 - r["accurate"] for r in rows]
    assert uncertain[-1] < uncertain[0]
    assert rows[-1]["accurate"] >= 0.6  # the configured accurate_ratio
    assert rows[-1]["candidate"] < max(r["candidate"] for r in rows[:-1])
    assert "converged" in res.output and "val F RMSE" in res.output


def test_every_selection_labelled_once(campaign):
    store, rec = campaign["store"], campaign["rec"]
    labels = store.list_labels(rec.id, limit=None)
    selected = {s.structure_id for s in store.list_selections(rec.id)}
    sids = [lb.structure_id for lb in labels]
    assert len(sids) == len(set(sids)) == len(selected)
    assert set(sids) == selected
    assert all(lb.status == "done" for lb in labels)
    # one model per iteration, checkpoints where the database says, sha256 matching
    models = store.list_models(rec.id)
    assert len(models) == len(campaign["rows"])
    from mlip_core.checkpoint import file_sha256

    for m in models:
        assert not Path(m.checkpoint_uri).is_absolute()  # relative to the data directory
        assert file_sha256(campaign["data"] / m.checkpoint_uri) == m.checkpoint_sha256


def test_validation_set_never_trained_on(campaign):
    store, rec = campaign["store"], campaign["rec"]
    from workflows.select import is_holdout

    sels = store.list_selections(rec.id)
    val_sids = {s.structure_id for s in sels if s.reason == "validation"}
    held = {s.structure_id for s in sels if is_holdout(s)}  # explored frames held out
    assert len(val_sids - held) == 12 and held  # the seeded copies, and some held out
    val_labels = {
        lb.id for lb in store.list_labels(rec.id, limit=None) if lb.structure_id in val_sids
    }
    for m in store.list_models(rec.id):
        assert not (set(m.training_label_ids.tolist()) & val_labels)


def test_status_and_resume_of_converged(campaign):
    data = campaign["data"]
    res = runner.invoke(app, ["status", "--data-dir", str(data)])
    assert res.exit_code == 0 and "reduced" in res.output and "converged" in res.output
    res = runner.invoke(app, ["status", "reduced", "--data-dir", str(data)])
    assert res.exit_code == 0 and "val F RMSE" in res.output
    res = runner.invoke(app, ["status", "nope", "--data-dir", str(data)])
    assert res.exit_code == 2 and "unknown campaign 'nope'" in res.output
    n_before = len(campaign["store"].list_iterations(campaign["rec"].id))
    res = runner.invoke(app, ["resume", "reduced", "--data-dir", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(campaign["store"].list_iterations(campaign["rec"].id)) == n_before


def test_export_loads_in_plain_ase(campaign, tmp_path: Path):
    import ase.io

    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.checkpoint import load_committee

    out = tmp_path / "export"
    res = runner.invoke(
        app, ["export", "reduced", "--out", str(out), "--data-dir", str(campaign["data"])]
    )
    assert res.exit_code == 0, res.output
    frames = ase.io.read(out / "dataset.extxyz", index=":")
    val = ase.io.read(out / "validation.extxyz", index=":")
    store, rec = campaign["store"], campaign["rec"]
    n_labels = len(store.list_labels(rec.id, limit=None))
    n_val = sum(s.reason == "validation" for s in store.list_selections(rec.id))
    assert len(frames) + len(val) == n_labels and len(val) == n_val >= 12
    for a in frames + val:
        assert isinstance(a.info["REF_energy"], float)
        assert a.arrays["REF_forces"].shape == (len(a), 3)
        assert np.asarray(a.info["REF_stress"]).shape == (6,)
        assert a.calc is None  # REF_* keys, not a calculator's energy/forces
    # the exported loader gives the committee of the last model
    spec = importlib.util.spec_from_file_location("exported_loader", out / "load_calculator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calc = mod.get_calculator()
    model, _ = load_committee(campaign["data"] / store.latest_model(rec.id).checkpoint_uri)
    ref_calc = CommitteeCalculator(model)
    for a in val[:4]:
        b, c = a.copy(), a.copy()
        b.calc, c.calc = calc, ref_calc
        assert b.get_potential_energy() == pytest.approx(c.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(b.get_forces(), c.get_forces(), atol=1e-9)
        # and the committee is a decent potential on held-out structures
        assert abs(b.get_potential_energy() - a.info["REF_energy"]) / len(a) < 0.02


def _labels_by_hash(campaign) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    """The stored labels of the campaign: structure hash -> (energy eV, forces eV/Å, virial
    eV 3x3 = -sigma V), read from the store, not from an export."""
    from ase.stress import voigt_6_to_full_3x3_stress

    store, rec = campaign["store"], campaign["rec"]
    out = {}
    for lb in store.list_labels(rec.id, status="done", limit=None):
        st = store.get_structure(lb.structure_id)
        vol = abs(np.linalg.det(st.cell))
        out[st.hash] = (lb.energy, lb.forces, -voigt_6_to_full_3x3_stress(lb.stress) * vol)
    return out


def test_export_extxyz_and_deepmd_read_back_by_ase_and_dpdata(campaign, tmp_path: Path):
    """--format extxyz: ASE reads calculator results; dpdata's extxyz reader and --format
    deepmd (written by dpdata, read back by dpdata's deepmd/npy reader) give energies, forces and
    virials equal to the stored labels to 1e-8 relative (extxyz: to its 8 printed decimals)."""
    import ase.io
    import dpdata

    from database import atoms_hash

    labels = _labels_by_hash(campaign)
    data = str(campaign["data"])
    plain, deep = tmp_path / "plain", tmp_path / "deep"
    for fmt, out in (("extxyz", plain), ("deepmd", deep)):
        res = runner.invoke(
            app, ["export", "reduced", "-o", str(out), "--format", fmt, "--data-dir", data]
        )
        assert res.exit_code == 0, res.output
    frames = ase.io.read(plain / "dataset.extxyz", index=":")
    for a in frames:
        e, f, _ = labels[atoms_hash(a)]
        assert a.get_potential_energy() == pytest.approx(e, rel=1e-12)
        np.testing.assert_allclose(a.get_forces(), f, rtol=0, atol=1e-8)  # text: 8 decimals

    def check(system, n_expected, atol):
        n = 0
        for sub in system:
            for k in range(len(sub)):
                cell, coords = sub["cells"][k], sub["coords"][k]
                key = next(
                    h
                    for h, (e, _, _) in labels.items()
                    if abs(e - sub["energies"][k]) <= 1e-8 * abs(e)
                )
                _, f, w = labels[key]
                np.testing.assert_allclose(sub["forces"][k], f, rtol=1e-8, atol=atol)
                np.testing.assert_allclose(sub["virials"][k], w, rtol=1e-8, atol=atol)
                assert cell.shape == (3, 3) and coords.shape == f.shape
                n += 1
        assert n == n_expected

    text = dpdata.MultiSystems.from_file(str(plain / "dataset.extxyz"), fmt="extxyz")
    check(text, len(frames), atol=1e-7)  # forces 8 decimals, stress 8 significant digits
    npy = dpdata.MultiSystems()
    for d in sorted((deep / "deepmd" / "train").iterdir()):
        npy.append(dpdata.LabeledSystem(str(d), fmt="deepmd/npy"))
    check(npy, len(frames), atol=1e-12)  # binary: the labels themselves
    assert (deep / "deepmd" / "validation").is_dir()


@pytest.mark.slow  # MACE's trainer runs in the default suite through the mace backend
# (tests/workflows/test_extension_campaigns.py); this checks the exported command line itself
def test_mace_export_trains_with_mace_run_train(campaign, tmp_path: Path):
    """--format mace writes E0s and the mace_run_train command; that command (a 1-epoch, tiny
    model version) starts training on the export and saves a model."""
    import json
    import shlex
    import shutil
    import subprocess
    import sys

    out = tmp_path / "mace"
    res = runner.invoke(
        app, ["export", "reduced", "-o", str(out), "--data-dir", str(campaign["data"])]
    )
    assert res.exit_code == 0, res.output
    e0s = json.loads((out / "e0s.json").read_text())
    assert set(e0s) == {"29"} and -10 < e0s["29"] < 10  # Cu, eV (EMT's zero is near 0)
    argv = shlex.split((out / "mace_run_train.txt").read_text())
    assert argv[0] == "mace_run_train" and any(a.startswith("--E0s={29:") for a in argv)
    exe = shutil.which("mace_run_train", path=str(Path(sys.executable).parent))
    argv = [exe, *[a for a in argv[1:] if not a.startswith("--max_num_epochs")]]
    argv += [
        "--max_num_epochs=1",
        "--num_channels=8",
        "--max_L=0",
        "--batch_size=8",
        "--valid_batch_size=8",
        "--seed=1",
        "--default_dtype=float64",
    ]
    proc = subprocess.run(
        argv,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(out.glob("pesflow*.model")), sorted(p.name for p in out.iterdir())
