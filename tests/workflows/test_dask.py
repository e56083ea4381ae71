"""The campaign with ``task_runner: dask`` (prefect-dask, local cluster of 2 processes):
walkers and labels run in other processes and find their work through the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pesflow.cli import app

from ._campaigns import write_config


@pytest.mark.slow
def test_campaign_on_a_local_dask_cluster(prefect_harness, tmp_path: Path):
    from database import Store

    cfg = write_config(
        tmp_path / "dask.yaml",
        name="dasky",
        bootstrap={"n_structures": 4},
        validation={"n_structures": 4},
        training={"max_epochs": 10, "max_time_s": 10, "warm_start_epochs": 5},
        exploration={
            "walkers": [{"temperature": t, "steps": 40, "record_every": 5} for t in (300, 1200)]
        },
        convergence={"max_iterations": 2},
        execution={"task_runner": "dask", "max_workers": 2},
    )
    data = tmp_path / "data"
    res = CliRunner().invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    with Store.sqlite(data) as store:
        rec = store.get_campaign("dasky")
        assert rec.status == "paused"
        labels = store.list_labels(rec.id, limit=None)
        assert labels and all(lb.status == "done" for lb in labels)
        assert len({lb.structure_id for lb in labels}) == len(labels)
        its = store.list_iterations(rec.id)
        assert len(its) == 2 and all("walker:1" in it.validation for it in its)
        assert len(store.list_models(rec.id)) == 2
