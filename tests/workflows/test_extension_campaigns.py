"""Extension points end to end through ``pesflow run``: a campaign whose committee is K MACE
models trained by MACE's own code (and whose export is an ASE calculator), and a campaign whose
exploration includes a nudged elastic band on the Cu vacancy hop (images from the barrier
region offered and labelled by the oracle)."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.calculators.emt import EMT
from typer.testing import CliRunner

from mlip_core.contract_explore import vacancy_hop
from pesflow.cli import app

from ._campaigns import write_config

runner = CliRunner()


@pytest.fixture(scope="module")
def mace_campaign(prefect_harness, tmp_path_factory):
    import mlip_core.mace_backend  # noqa: F401

    root = tmp_path_factory.mktemp("mace")
    cfg = write_config(
        root / "mace.yaml",
        name="mace-reduced",
        bootstrap={"n_structures": 6},
        validation={"n_structures": 4},
        training={"max_epochs": 4, "warm_start_epochs": 2, "batch_size": 2},
        exploration={
            "walkers": [
                {"temperature": t, "steps": 40, "timestep": 2.0, "record_every": 5}
                for t in (300, 900)
            ]
        },
        selection={"max_per_iteration": 4, "strategy": "max-first"},
        convergence={"accurate_ratio": 1.0, "patience": 1, "max_iterations": 2},
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["model"] = {"backend": "mace", "n_members": 2, "cutoff": 4.0, "num_channels": 8}
    cfg.write_text(yaml.safe_dump(doc))
    data = root / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    yield {"result": res, "data": data, "root": root}


def test_mace_campaign_runs_two_iterations_and_exports_an_ase_calculator(mace_campaign):
    from database import Store
    from mlip_core.checkpoint import load_committee
    from mlip_core.model import LoopCommittee
    from mlip_core.repulsion import ZBLRepulsion, unwrap
    from workflows.export import load_exported_calculator

    res, data = mace_campaign["result"], mace_campaign["data"]
    assert res.exit_code == 0, res.output
    store = Store.sqlite(data)
    try:
        rec = store.get_campaign("mace-reduced")
        assert "max_iterations=2" in (rec.status_message or ""), rec.status_message
        models = store.list_models(rec.id)
        assert len(models) == 2
        assert all(m.validation["backend"] == "mace" for m in models)
        assert models[-1].validation["warm_start"] is True  # fine-tuned from iteration 0
        model, meta = load_committee(
            data / models[-1].checkpoint_uri, expected_sha256=models[-1].checkpoint_sha256
        )
        learned, baseline = unwrap(model)  # MACE under the default ZBL baseline
        assert meta["backend"] == "mace" and isinstance(learned, LoopCommittee)
        assert isinstance(baseline, ZBLRepulsion)
        assert model.n_members == 2
        labels = store.list_labels(rec.id, limit=None)
        assert sum(lb.status == "done" for lb in labels) > 10  # the seed's and iteration 0's
    finally:
        store.close()
    out = mace_campaign["root"] / "export"
    exp = runner.invoke(app, ["export", "mace-reduced", "-o", str(out), "--data-dir", str(data)])
    assert exp.exit_code == 0, exp.output
    calc = load_exported_calculator(out)
    atoms = vacancy_hop()[0]
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(e) and f.shape == (len(atoms), 3)
    assert calc.results["forces_committee"].shape == (2, len(atoms), 3)
    ref = atoms.copy()
    ref.calc = EMT()
    # a 2-iteration tiny MACE is not converged, but it has learnt Cu: forces within 0.5 eV/Å
    assert np.abs(f - ref.get_forces()).max() < 0.5


def test_neb_campaign_labels_images_from_the_barrier_region(prefect_harness, tmp_path: Path):
    initial, final = vacancy_hop()
    ase.io.write(tmp_path / "initial.xyz", initial, format="extxyz")
    ase.io.write(tmp_path / "final.xyz", final, format="extxyz")
    cfg = write_config(
        tmp_path / "neb.yaml",
        name="vacancy-hop",
        structures=[{"file": "initial.xyz"}, {"file": "final.xyz"}],
        bootstrap={"n_structures": 8, "rattle": 0.05},
        validation={"n_structures": 4},
        model={"n_members": 3, "channels": 8},
        training={"max_epochs": 40, "max_time_s": 30},
        exploration={
            "walkers": [
                {"temperature": 600, "steps": 40, "timestep": 2.0, "record_every": 10, "start": 0},
                {
                    "kind": "neb",
                    "initial": 0,
                    "final": 1,
                    "n_images": 5,
                    "steps": 30,
                    "record_every": 10,
                },
            ]
        },
        trust={"lo": 0.01, "hi": 5.0},
        selection={"max_per_iteration": 12, "strategy": "max-first", "label_cut_frames": True},
        convergence={"accurate_ratio": 1.0, "patience": 1, "max_iterations": 1},
    )
    data = tmp_path / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    from database import Store

    store = Store.sqlite(data)
    try:
        rec = store.get_campaign("vacancy-hop")
        labels = [lb for lb in store.list_labels(rec.id, limit=None) if lb.status == "done"]
        structs = store.get_structures([lb.structure_id for lb in labels])
        neb = [s for s in structs if s.info.get("explorer") == "neb"]
        assert neb, [s.info for s in structs][:3]
        rcs = sorted(float(s.info["reaction_coordinate"]) for s in neb)
        assert any(0.3 <= rc <= 0.7 for rc in rcs), rcs  # the saddle region was labelled
        e0 = initial.copy()
        e0.calc = EMT()
        end = e0.get_potential_energy()
        energies = []
        for s in neb:
            (atoms,) = store.get_atoms([s.id])
            atoms.calc = EMT()
            energies.append(atoms.get_potential_energy() - end)
        # the oracle sees a barrier (EMT: ~0.5-0.9 eV for this hop) among the labelled images
        assert max(energies) > 0.3, energies
        runs = store.list_walker_runs(store.list_iterations(rec.id)[-1].id)
        assert {r.ensemble for r in runs} == {"nvt", "neb"}
    finally:
        store.close()


def test_neb_endpoints_from_labelled_structures(tmp_path: Path):
    """A band may start from a structure the campaign labelled (by database id); an id that is
    not a labelled structure of the campaign fails that walker with a message, not the run."""
    from workflows import steps
    from workflows.config import ConfigError, load_config

    initial, final = vacancy_hop()
    ase.io.write(tmp_path / "initial.xyz", initial, format="extxyz")
    ase.io.write(tmp_path / "final.xyz", final, format="extxyz")
    band = {"kind": "neb", "final": 1, "n_images": 3, "steps": 10, "interpolation": "linear"}
    path = write_config(
        tmp_path / "c.yaml",
        name="stored-ends",
        structures=[{"file": "initial.xyz"}, {"file": "final.xyz"}],
        bootstrap={"n_structures": 4, "rattle": 0.03, "strain": 0.0},
        # ids 1-2: the initial structures; 3-4: validation copies (3 from initial.xyz)
        validation={"n_structures": 2, "rattle": [0.02], "strain": 0.0},
        model={"n_members": 2, "channels": 8},
        training={"max_epochs": 5, "max_time_s": 10},
        exploration={
            "walkers": [
                {**band, "initial": {"structure_id": 3}},
                {**band, "initial": {"structure_id": 999}},
            ]
        },
        trust={"lo": 0.01, "hi": 5.0},
        convergence={"accurate_ratio": 1.0, "patience": 1, "max_iterations": 1},
    )
    cfg = load_config(path)
    assert cfg.exploration.walkers[0].stored_ids() == [3]
    data = tmp_path / "data"
    data.mkdir()
    handle = steps.setup_campaign(steps.open_store(f"sqlite:///{data / 'db.sqlite'}"), cfg, data)
    steps.run_campaign(handle)
    store = steps.open_context(handle).store
    runs = {
        r.walker: r for r in store.list_walker_runs(store.list_iterations(handle.campaign_id)[0].id)
    }
    assert runs[0].status == "done" and runs[0].n_frames > 0, runs[0].error
    assert runs[1].status == "failed" and "[999] are not labelled structures" in runs[1].error
    bad = yaml.safe_load(path.read_text())
    bad["exploration"]["walkers"] = [{**band, "initial": {"structure_id": 0}}]
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="structure_id: must be >= 1"):
        load_config(path)


def test_band_ends_that_are_not_one_band_are_refused_before_the_run(tmp_path: Path):
    """Endpoints with other atoms, or the same atoms listed in another order (one atom moving
    across the cell), are a config error naming the walker, not a failed walker after training."""
    from workflows.config import ConfigError, load_config
    from workflows.structures import initial_structures

    initial, final = vacancy_hop()
    shuffled = final[list(range(len(final)))[::-1]]  # same atoms, reversed order
    bigger = initial.copy()
    bigger.append("Cu")  # the vacancy filled: 32 atoms against 31
    for name, other, match in (
        ("reversed.xyz", shuffled, "moves .* Å between the NEB endpoints"),
        ("bigger.xyz", bigger, "same atoms in the same order"),
    ):
        ase.io.write(tmp_path / "initial.xyz", initial, format="extxyz")
        ase.io.write(tmp_path / name, other, format="extxyz")
        cfg = load_config(
            write_config(
                tmp_path / "c.yaml",
                structures=[{"file": "initial.xyz"}, {"file": name}],
                exploration={"walkers": [{"kind": "neb", "initial": 0, "final": 1}]},
            )
        )
        with pytest.raises(ConfigError, match=r"exploration\.walkers\[0\]: .*" + match):
            initial_structures(cfg)
