"""Faults the loop survives without corrupting itself or repeating a DFT calculation:
checkpoints that are corrupt or gone, a data directory that moved, a database that turns
read-only or full in the middle of labelling; and runs that are reproducible."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from workflows import lease, steps
from workflows.config import load_config

from . import _counting
from ._campaigns import write_config

SMALL = {
    "bootstrap": {"n_structures": 4},
    "validation": {"n_structures": 4},
    "training": {"max_epochs": 6, "max_time_s": 600, "warm_start_epochs": 3},
    "exploration": {
        "walkers": [{"temperature": t, "steps": 30, "record_every": 5} for t in (600, 1200)]
    },
    "selection": {"max_per_iteration": 4, "strategy": "max-first"},
}


def _ctx(data: Path, name: str, **overrides):
    data.mkdir(parents=True, exist_ok=True)
    cfg = load_config(
        write_config(data.parent / f"{name}.yaml", name=name, **{**SMALL, **overrides})
    )
    store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
    return steps.open_context(steps.setup_campaign(store, cfg, data))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _first_iteration(ctx):
    store = ctx.store
    it = store.start_iteration(ctx.campaign_id, 0)
    steps.seed_step(ctx.handle, it.id)
    steps.label_step(ctx.handle, it.id)
    return it, steps.train_step(ctx.handle, it.id)


@pytest.mark.parametrize("damage", ["bit flip", "truncation", "deletion"])
def test_a_corrupt_checkpoint_is_refused_and_rebuilt_from_its_recorded_inputs(tmp_path, damage):
    from mlip_core.checkpoint import CheckpointIntegrityError

    ctx = _ctx(tmp_path / "data", "ckpt")
    it, out = _first_iteration(ctx)
    path = ctx.resolve(out.checkpoint)
    good = _weights(path)
    sha = ctx.store.get_model(out.model_id).checkpoint_sha256
    if damage == "bit flip":  # still a loadable checkpoint, one weight changed
        payload = torch.load(path, weights_only=True)
        key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
        t = payload["state_dict"][key]
        t.view(-1)[0] = t.view(-1)[0] * 2 + 1
        torch.save(payload, path)
    elif damage == "truncation":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    # exploration never uses it: the walker refuses the file before running
    with pytest.raises((CheckpointIntegrityError, FileNotFoundError)):
        steps.explore_one(ctx.handle, it.id, 0, out.model_id)
    assert ctx.store.list_walker_runs(it.id) == []
    # the train step notices and rebuilds the committee from its recorded inputs
    again = steps.train_step(ctx.handle, it.id)
    assert again.model_id == out.model_id and len(ctx.store.list_models(ctx.campaign_id)) == 1
    rebuilt = ctx.store.get_model(out.model_id)
    assert rebuilt.validation["rebuilt_from_inputs"] is True
    # deterministic training: the same weights, bit for bit, and the same file
    assert all(torch.equal(good[k], v) for k, v in _weights(path).items())
    assert rebuilt.checkpoint_sha256 == sha and rebuilt.validation["reproduced_sha256"] is True
    assert steps.explore_one(ctx.handle, it.id, 0, out.model_id)["status"] == "done"


def test_a_moved_data_directory_resumes_with_its_own_files(tmp_path):
    old = tmp_path / "old" / "data"
    ctx = _ctx(old, "moved", convergence={"max_iterations": 2, "accurate_ratio": 0.999})
    _, out = _first_iteration(ctx)
    assert not Path(ctx.store.get_model(out.model_id).checkpoint_uri).is_absolute()
    steps.close_stores()
    new = tmp_path / "new" / "data"
    shutil.move(str(old.parent), str(new.parent))
    assert not old.exists()
    store = steps.open_store(f"sqlite:///{new / 'pesflow.sqlite'}")
    handle = steps.reopen_campaign(store, "moved", new)
    moved = steps.open_context(handle)
    with lease.hold(store, handle.campaign_id, purpose="test") as held:
        d = steps.run_campaign(moved, held)
        held.finish(d.status, d.message)
    assert d.status == "paused" and "max_iterations=2" in d.message
    its = store.list_iterations(handle.campaign_id)
    assert [i.status for i in its] == ["done", "done"]
    # iteration 1 warm-started from the moved checkpoint of iteration 0, which was not retrained
    m0, m1 = store.list_models(handle.campaign_id)
    assert m1.parent_model_id == m0.id and "rebuilt_from_inputs" not in m0.validation
    assert (new / m1.checkpoint_uri).is_file()


@pytest.fixture(  # read-only runs on PostgreSQL in the default suite, on SQLite behind slow
    params=[
        pytest.param("sqlite-read-only", marks=pytest.mark.slow),
        "sqlite-disk-full",
        "postgres-read-only",
    ]
)
def db(request, tmp_path, monkeypatch):
    """(database URL, fault kind) with ``PESFLOW_*`` pointing at it."""
    backend, kind = request.param.split("-", 1)
    kind = {"read-only": "read-only", "disk-full": "disk full"}[kind]
    data = tmp_path / "data"
    monkeypatch.setenv("PESFLOW_DATA_DIR", str(data))
    monkeypatch.setenv("PESFLOW_LEASE_TTL_S", "2")
    if backend == "sqlite":
        from database import sqlite_url

        yield sqlite_url(data), kind
        return
    import os

    from database.testing import POSTGRES_ENV, require_test_database, temporary_postgres_schema

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.fail(f"{POSTGRES_ENV} is not set: the PostgreSQL fault test cannot run")
    with temporary_postgres_schema(require_test_database(base)) as url:
        monkeypatch.setenv("PESFLOW_DATABASE_URL", url)
        yield url, kind


def test_database_fault_during_labelling_recomputes_nothing(
    db, prefect_harness, tmp_path, monkeypatch
):
    """The database turns read-only / full while the bootstrap labels are computed: the run
    stops with one line naming the database and the cause, the DFT outcomes stay on disk, and
    the resume stores them without running the code again."""
    from database import DbRetry
    from pesflow.cli import app

    from ..database.test_resilience import Fault

    url, kind = db
    log = tmp_path / "dft.log"
    monkeypatch.setenv(_counting.ENV, str(log))
    cfg = write_config(
        tmp_path / "fault.yaml",
        name="fault",
        **{**SMALL, "convergence": {"max_iterations": 1}},
    )
    store = steps.open_store(url)  # the store the CLI will use (one per URL and process)
    store.db_retry = DbRetry(attempts=3, base_delay_s=0.05)
    fault = Fault(store, kind)
    start = _counting._runs  # runs counted so far in this process (other tests)
    monkeypatch.setattr(_counting, "on_run", lambda n: fault.set(True) if n == start + 3 else None)
    runner = CliRunner()
    try:
        res = runner.invoke(app, ["run", str(cfg), "--quiet"])
    finally:
        monkeypatch.setattr(_counting, "on_run", None)
        fault.set(False)
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert kind in errors[0] and ("SQLite file" in errors[0] or "PostgreSQL" in errors[0])
    assert "pesflow resume" in errors[0]
    first = _counting.dft_runs(log)
    assert sum(first.values()) >= 3 and max(first.values()) == 1
    time.sleep(2.5)  # this process's lease (it could not be given back) expires
    res = runner.invoke(app, ["resume", "fault", "--quiet"])
    assert res.exit_code == 0, res.output
    runs = _counting.dft_runs(log)
    assert max(runs.values()) == 1, "a DFT calculation ran twice"
    rec = store.get_campaign("fault")
    labels = store.list_labels(rec.id, limit=None)
    assert all(lb.status == "done" and lb.attempts == 1 for lb in labels)
    assert len(labels) == sum(runs.values())  # every run stored, every label computed once
    assert rec.status == "paused" and "max_iterations=1" in rec.status_message


def _table(store, name: str) -> list[dict]:
    rows = steps.summary_rows(store, store.get_campaign(name).id)
    for r in rows:
        r.pop("timings")
    return rows


def test_same_config_and_seed_give_identical_tables_and_models(prefect_harness, tmp_path):
    """``max_time_s`` set (and not binding): the learning-rate schedule follows epochs, so two
    runs pick the same frames, train bit-identical committees and print the same table."""
    from pesflow.cli import app

    tables, shas, picks = [], [], []
    for k in range(2):
        data = tmp_path / f"run{k}"
        cfg = write_config(
            tmp_path / f"same{k}.yaml",
            name="same",
            **{**SMALL, "convergence": {"max_iterations": 2, "accurate_ratio": 0.999}},
        )
        res = CliRunner().invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"])
        assert res.exit_code == 0, res.output
        store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
        cid = store.get_campaign("same").id
        tables.append(_table(store, "same"))
        shas.append([m.checkpoint_sha256 for m in store.list_models(cid)])
        sel = store.list_selections(cid)
        picks.append([store.get_structure(s.structure_id).hash for s in sel])
        assert re.search(r"\b6/6\b", res.output)  # epochs column: 6 of 6, not time-capped
    assert tables[0] == tables[1]
    assert picks[0] == picks[1] and shas[0] == shas[1]


def test_a_time_capped_committee_is_rebuilt_bit_for_bit(tmp_path):
    """A committee the clock stopped after k epochs is replayed for exactly k epochs of the
    same schedule, not retrained to max_epochs: the same file comes back."""
    ctx = _ctx(tmp_path / "data", "capped", training={"max_epochs": 400, "max_time_s": 0.5})
    _, out = _first_iteration(ctx)
    rec = ctx.store.get_model(out.model_id)
    assert rec.validation["time_capped"] is True and rec.validation["epochs"] < 400
    path = ctx.resolve(out.checkpoint)
    path.unlink()
    steps.train_step(ctx.handle, rec.iteration_id)
    again = ctx.store.get_model(out.model_id)
    assert again.checkpoint_sha256 == rec.checkpoint_sha256
    assert again.validation["reproduced_sha256"] is True


def test_export_refuses_a_corrupt_checkpoint_before_writing_and_resume_repairs_it(
    prefect_harness, tmp_path
):
    from pesflow.cli import app

    data = tmp_path / "data"
    cfg = write_config(
        tmp_path / "exp.yaml", name="exp", **{**SMALL, "convergence": {"max_iterations": 1}}
    )
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(cfg), "--data-dir", str(data), "--quiet"]).exit_code == 0
    store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
    model = store.latest_model("exp")
    ckpt = data / model.checkpoint_uri
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    out = tmp_path / "export"
    res = runner.invoke(app, ["export", "exp", "-o", str(out), "--data-dir", str(data)])
    assert res.exit_code == 1 and "pesflow resume exp" in res.stderr
    assert not out.exists()  # nothing half-written
    res = runner.invoke(app, ["resume", "exp", "--data-dir", str(data), "--quiet"])
    assert res.exit_code == 0, res.output
    again = store.get_model(model.id)
    assert again.validation["rebuilt_from_inputs"] and again.validation["reproduced_sha256"]
    res = runner.invoke(app, ["export", "exp", "-o", str(out), "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    assert (out / "committee.pt").is_file()
