"""`pesflow export --format torchscript`: the latest committee (ZBL baseline included) as
TorchScript files plus a single-file ASE calculator, checked against pesflow's calculator, with
a README giving the sha256 of every file and the provenance; dataset formats get a README too."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mlip_core.checkpoint import file_sha256
from workflows import steps
from workflows.config import load_config
from workflows.context import CampaignFailedError
from workflows.export import export_campaign

from ._campaigns import write_config

SMALL = {
    "bootstrap": {"n_structures": 4},
    "validation": {"n_structures": 4},
    "training": {"max_epochs": 6, "max_time_s": 600, "warm_start_epochs": 3},
    "model": {"n_members": 3, "channels": 8, "n_layers": 1},
}


def _ctx(data: Path, name: str):
    data.mkdir(parents=True, exist_ok=True)
    cfg = load_config(write_config(data.parent / f"{name}.yaml", name=name, **SMALL))
    store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
    return steps.open_context(steps.setup_campaign(store, cfg, data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A campaign after one iteration (seed, label with EMT, train): one model."""
    data = tmp_path_factory.mktemp("ts") / "data"
    ctx = _ctx(data, "ts")
    it = ctx.store.start_iteration(ctx.campaign_id, 0)
    steps.seed_step(ctx.handle, it.id)
    steps.label_step(ctx.handle, it.id)
    steps.train_step(ctx.handle, it.id)
    return ctx, data


def _import(path: Path):
    spec = importlib.util.spec_from_file_location("exported_pesflow_calculator", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    sys.modules.pop(spec.name)
    return mod


def test_torchscript_export_from_the_cli_runs_like_pesflow(trained, tmp_path):
    from ase.build import bulk

    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.standalone_check import compare_calculators, probe_structures
    from pesflow.cli import app
    from workflows.train import load_model

    ctx, data = trained
    out = tmp_path / "ts"
    args = ["export", "ts", "-o", str(out), "--format", "torchscript", "--data-dir", str(data)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert names == {
        "committee-float64.pt",
        "committee-float32.pt",
        "pesflow_calculator.py",
        "README.md",
    }
    readme = (out / "README.md").read_text()
    for name in names - {"README.md"}:
        assert file_sha256(out / name) in readme  # sha256 of every shipped file
    record = ctx.store.latest_model(ctx.campaign_id)
    assert record.checkpoint_sha256 in readme and f"model_id: `{record.id}`" in readme
    assert "ZBL" in readme and "max_devi_f" in readme and "1e-10" in readme
    measured = re.findall(r"\| `(\w+)` \| ([0-9.e+-]+) \| ([0-9.e+-]+) \|", readme)
    assert {m[0] for m in measured} >= {"energy", "forces", "stress", "forces_std"}
    assert all(float(a) <= 1e-10 and float(b) <= 1e-5 for _, a, b in measured)
    # the shipped calculator, imported from the folder, on a structure the check did not see
    mod = _import(out / "pesflow_calculator.py")
    model = load_model(ctx, record)
    atoms = bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.08, seed=3)
    assert model.dtype == torch.float32  # trained in float32: both files are checked
    diff = compare_calculators(
        CommitteeCalculator(copy.deepcopy(model).double()),
        mod.PesflowCalculator(out / "committee-float64.pt"),
        probe_structures(atoms),
    )
    assert max(diff.values()) <= 1e-10, diff
    diff = compare_calculators(
        CommitteeCalculator(model),
        mod.PesflowCalculator(out / "committee-float32.pt"),
        probe_structures(atoms),
    )
    assert max(diff.values()) <= 1e-5, diff
    calc = mod.PesflowCalculator(str(out / "committee-float32.pt"))
    atoms.calc = calc
    assert atoms.get_stress().shape == (6,)
    assert calc.results["max_devi_f"] == calc.results["max_force_dev"] > 0


def test_dataset_export_writes_a_readme_with_sha256(trained, tmp_path):
    ctx, _ = trained
    res = export_campaign(ctx, tmp_path / "x", "extxyz")
    text = res.readme.read_text()
    for path in (res.dataset, res.validation, res.checkpoint, res.loader):
        assert f"`{path.name}`" in text and file_sha256(path) in text
    assert f"frames_train: `{res.n_train}`" in text
    res = export_campaign(ctx, tmp_path / "d", "deepmd")  # directories: every file listed
    text = res.readme.read_text()
    files = [p for p in (tmp_path / "d" / "deepmd").rglob("*") if p.is_file()]
    assert files and all(file_sha256(p) in text for p in files)


def test_torchscript_export_needs_a_model(tmp_path):
    ctx = _ctx(tmp_path / "data", "empty")
    with pytest.raises(CampaignFailedError, match="no model yet"):
        export_campaign(ctx, tmp_path / "out", "torchscript")
    assert not (tmp_path / "out").exists()


def test_torchscript_export_refuses_other_backends(trained, tmp_path, monkeypatch):
    """A MACE (or any non-native) committee has no TorchScript port: a clear refusal."""
    from mlip_core.committee import LoopCommittee
    from workflows import train

    ctx, _ = trained
    native = train.load_model(ctx, ctx.store.latest_model(ctx.campaign_id))
    monkeypatch.setattr(train, "load_model", lambda *_: LoopCommittee([native.learned]))
    with pytest.raises(CampaignFailedError, match="exports the native committee"):
        export_campaign(ctx, tmp_path / "out", "torchscript")


def test_an_export_that_fails_its_check_leaves_no_potential(trained, tmp_path, monkeypatch):
    from mlip_core import standalone_check

    ctx, _ = trained
    monkeypatch.setitem(standalone_check.TOLERANCES, "float64", -1.0)
    with pytest.raises(CampaignFailedError, match="float64 export differs"):
        export_campaign(ctx, tmp_path / "out", "torchscript")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_unknown_format_is_one_line_before_anything_is_opened(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pesflow.cli import app

    data = tmp_path / "data"
    res = CliRunner().invoke(
        app,
        [
            "export",
            "NOSUCH",
            "-o",
            str(tmp_path / "x"),
            "--format",
            "lamps",
            "--data-dir",
            str(data),
        ],
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines == [
        "error: --format: unknown export format 'lamps' — did you mean 'lammps'?; one of "
        "mace, extxyz, deepmd, torchscript, lammps"
    ], res.output
    assert not (data / "pesflow.sqlite").exists() and not (tmp_path / "x").exists()
