"""Labeler failures are data: a campaign with 30 % failing calls completes and stores every
failure with its kind and message; above the configured failure rate it stops cleanly."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pesflow.cli import app

from ._campaigns import write_config

runner = CliRunner()
KINDS = {"scf_unconverged", "crashed", "timeout", "invalid_input", "missing_executable", "other"}


def test_thirty_percent_failures_complete(prefect_harness, tmp_path: Path):
    from database import Store

    cfg = write_config(
        tmp_path / "faulty.yaml",
        name="faulty",
        labeler={
            "name": "emt",
            "retries": False,
            "max_failure_rate": 0.6,
            "faults": {"fraction": 0.3, "seed": 3},
        },
        bootstrap={"n_structures": 12},
        validation={"n_structures": 24},
        training={"max_epochs": 30, "max_time_s": 5, "warm_start_epochs": 10},
        exploration={
            "walkers": [
                {"temperature": t, "steps": 100, "timestep": 2.0, "record_every": 5}
                for t in (300, 1200)
            ]
        },
        convergence={"accurate_ratio": 0.999, "patience": 1, "max_iterations": 2},
    )
    data = tmp_path / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    with Store.sqlite(data) as store:
        rec = store.get_campaign("faulty")
        assert rec.status == "paused" and "max_iterations=2" in rec.status_message
        labels = store.list_labels(rec.id, limit=None)
        failed = [lb for lb in labels if lb.status == "failed"]
        done = [lb for lb in labels if lb.status == "done"]
        assert len(labels) >= 40
        assert 0.15 <= len(failed) / len(labels) <= 0.45  # ~30 % injected
        assert len(done) + len(failed) == len(labels)  # nothing left pending/running
        for lb in failed:
            assert lb.failure_kind in KINDS
            assert "injected fault" in lb.failure_message
            assert lb.energy is None and lb.forces is None
        kinds = {lb.failure_kind for lb in failed}
        assert len(kinds) >= 3, kinds
        # a failure kind the database has no column value for keeps its name in the message
        for lb in failed:
            if lb.failure_kind == "other":
                assert lb.failure_message.startswith("[missing_executable] ")
        # failed structures never reach training; both iterations trained on done labels only
        failed_ids = {lb.id for lb in failed}
        for m in store.list_models(rec.id):
            assert not (set(m.training_label_ids.tolist()) & failed_ids)
        assert len(store.list_models(rec.id)) == 2


def test_failure_rate_above_threshold_stops_with_one_line(prefect_harness, tmp_path: Path):
    from database import Store

    cfg = write_config(
        tmp_path / "bad.yaml",
        name="toofaulty",
        labeler={
            "name": "emt",
            "retries": False,
            "max_failure_rate": 0.1,
            "faults": {"fraction": 0.5, "kinds": ["crashed", "timeout"]},
        },
    )
    data = tmp_path / "data"
    res = runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: iteration 0: ") and "max_failure_rate 10%" in line
    assert "crashed=" in line and "timeout=" in line
    with Store.sqlite(data) as store:
        rec = store.get_campaign("toofaulty")
        assert rec.status == "failed" and rec.status_message.startswith("iteration 0")
        assert not store.list_models(rec.id)
