"""A campaign whose committee is K GAP fits (QUIP's gap_fit through quippy-ase): bootstrap plus
two iterations with the EMT oracle; the GAP models are stored, reloaded from their checkpoints,
and their predictive variance is the uncertainty the trust window and selection read."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from typer.testing import CliRunner

from pesflow.cli import app

from .._codes import require_quippy
from ._campaigns import write_config

runner = CliRunner()
SMALL = {"l_max": 3, "n_max": 4, "n_sparse": 40, "n_sparse_2b": 10}


@pytest.fixture(scope="module")
def gap_campaign(prefect_harness, tmp_path_factory):
    require_quippy()  # skip on a user's machine without quippy-ase; FAIL in CI
    root = tmp_path_factory.mktemp("gap")
    cfg = write_config(
        root / "gap.yaml",
        name="gap-reduced",
        bootstrap={"n_structures": 6},
        validation={"n_structures": 4},
        exploration={
            "walkers": [
                {"temperature": t, "steps": 40, "timestep": 2.0, "record_every": 5}
                for t in (300, 900)
            ]
        },
        # a GP's sd of the local energy, eV: its own scale (see mlip_core.gap_backend)
        trust={"lo": 0.002, "hi": 1.0},
        selection={"max_per_iteration": 4, "strategy": "max-first"},
        convergence={"accurate_ratio": 1.0, "patience": 1, "max_iterations": 2},
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["model"] = {"backend": "gap", "n_members": 2, "cutoff": 4.0, **SMALL}
    cfg.write_text(yaml.safe_dump(doc))
    data = root / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    return {"result": res, "data": data}


def test_gap_campaign_stores_gap_models_and_selects_by_their_variance(gap_campaign):
    from database import Store
    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.checkpoint import load_committee
    from mlip_core.gap_model import GapCommittee
    from mlip_core.repulsion import unwrap

    res, data = gap_campaign["result"], gap_campaign["data"]
    assert res.exit_code == 0, res.output
    store = Store.sqlite(data)
    try:
        rec = store.get_campaign("gap-reduced")
        assert "max_iterations=2" in (rec.status_message or ""), rec.status_message
        models = store.list_models(rec.id)
        assert len(models) == 2
        assert all(m.validation["backend"] == "gap" for m in models)
        model, meta = load_committee(
            data / models[-1].checkpoint_uri, expected_sha256=models[-1].checkpoint_sha256
        )
        assert meta["backend"] == "gap" and isinstance(unwrap(model)[0], GapCommittee)
        labels = [lb for lb in store.list_labels(rec.id, limit=None) if lb.status == "done"]
        assert len(labels) > 10  # the seed's and iteration 0's selections were labelled
        its = store.list_iterations(rec.id)
        structs = store.get_structures([lb.structure_id for lb in labels])
        picked = [s for s in structs if "uncertainty" in s.info]
        assert picked, "explored frames were selected by their uncertainty"
        assert all(np.isfinite(float(s.info["uncertainty"])) for s in picked)
        assert len(its) == 2
    finally:
        store.close()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=4)
    atoms.calc = CommitteeCalculator(model)
    f = atoms.get_forces()
    res = atoms.calc.results
    assert res["uncertainty_source"] == "model" and res["uncertainty"].shape == (len(atoms),)
    assert res["max_uncertainty"] == res["uncertainty"].max() > 0  # the GP's sd, eV
    assert res["forces_std"].shape == (len(atoms),)  # the members' spread, eV/Å
    ref = atoms.copy()
    ref.calc = EMT()
    assert np.abs(f - ref.get_forces()).max() < 0.5  # it has learnt Cu
