"""The plain steps (no Prefect): idempotent against the database, failures as data."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from workflows import steps, timing
from workflows.config import ConfigError, load_config
from workflows.context import _full_url

from ._campaigns import write_config
from ._engines import Replacing, Submitting


@pytest.fixture
def ctx(tmp_path: Path):
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            name="unit",
            bootstrap={"n_structures": 4},
            validation={"n_structures": 4},
            training={"max_epochs": 3, "max_time_s": 5},
            exploration={"walkers": [{"temperature": 600, "steps": 20, "record_every": 5}]},
        )
    )
    store = steps.open_store(f"sqlite:///{tmp_path / 'pesflow.sqlite'}")
    handle = steps.setup_campaign(store, cfg, tmp_path)
    return steps.open_context(handle)


def test_setup_is_idempotent_and_refuses_other_config(ctx, tmp_path: Path):
    again = steps.setup_campaign(ctx.store, ctx.cfg, tmp_path)
    assert again == ctx.handle
    assert len(ctx.store.list_campaigns()) == 1
    other = ctx.cfg.model_copy(update={"seed": 99})
    with pytest.raises(steps.CampaignConflictError, match="already exists with a different"):
        steps.setup_campaign(ctx.store, other, tmp_path)


def test_seed_then_killed_labels_are_retried_done_never_recomputed(ctx):
    store, cid = ctx.store, ctx.campaign_id
    it = store.start_iteration(cid, 0)
    steps.seed_step(ctx.handle, it.id)
    steps.seed_step(ctx.handle, store.get_iteration(cid, 0).id)  # second call: nothing new
    assert store.count_labels(cid)["pending"] == 8
    # a killed worker: three labels claimed, one finished, two left running
    claimed = store.claim_labels(limit=3, campaign=cid)
    assert steps.label_one(ctx.handle, claimed[0].label_id) == "done"
    first = store.get_label(claimed[0].label_id)
    assert store.count_labels(cid)["running"] == 2
    out = steps.prepare_resume(ctx)
    assert out["requeued_running"] == 2
    counts = steps.label_step(ctx.handle, store.get_iteration(cid, 0).id)
    assert (counts.done, counts.failed) == (7, 0)  # the finished one was not redone
    assert store.get_label(first.id).finished_at == first.finished_at
    assert store.count_labels(cid) == {"pending": 0, "running": 0, "done": 8, "failed": 0}
    # label_one on a finished label leaves it alone
    assert steps.label_one(ctx.handle, first.id) == "done"
    assert store.get_label(first.id).finished_at == first.finished_at


def test_train_step_skips_when_model_exists_and_excludes_validation(ctx):
    store, cid = ctx.store, ctx.campaign_id
    it = store.start_iteration(cid, 0)
    steps.seed_step(ctx.handle, it.id)
    steps.label_step(ctx.handle, it.id)
    out = steps.train_step(ctx.handle, it.id)
    assert out.checkpoint == "campaigns/unit/models/iter-000.pt"  # relative to the data dir
    assert ctx.resolve(out.checkpoint).is_file() and out.val_force_rmse > 0
    models = store.list_models(cid)
    assert len(models) == 1 and len(models[0].training_label_ids) == 4  # bootstrap only
    assert models[0].seed is not None and models[0].parent_model_id is None
    again = steps.train_step(ctx.handle, it.id)
    assert again.model_id == out.model_id and len(store.list_models(cid)) == 1
    assert "train" in store.get_iteration(cid, 0).completed_steps


def test_walker_errors_are_recorded_rerun_and_never_pass_an_empty_iteration(ctx, monkeypatch):
    import mlip_core.md

    store, cid = ctx.store, ctx.campaign_id
    it = store.start_iteration(cid, 0)
    steps.seed_step(ctx.handle, it.id)
    steps.label_step(ctx.handle, it.id)
    model_id = steps.train_step(ctx.handle, it.id).model_id
    real = mlip_core.md.run_walker

    def broken(*args, **kwargs):
        raise RuntimeError("neighbour list exploded")

    monkeypatch.setattr(mlip_core.md, "run_walker", broken)
    stats = steps.explore_one(ctx.handle, it.id, 0, model_id)
    assert stats["status"] == "failed" and stats["error"].startswith("RuntimeError: neighbour")
    (run,) = store.list_walker_runs(it.id)
    assert run.error == stats["error"] and run.n_frames == 0
    # every walker failed: the step fails instead of passing an iteration with nothing explored
    with pytest.raises(steps.CampaignFailedError, match="all 1 walkers failed"):
        steps.explore_step(ctx.handle, it.id)
    assert "explore" not in store.get_iteration(cid, 0).completed_steps
    # the next run of the step runs the failed walker again
    monkeypatch.setattr(mlip_core.md, "run_walker", real)
    counts = steps.explore_step(ctx.handle, it.id)
    (run,) = store.list_walker_runs(it.id)
    assert run.status == "done" and counts.n_explored == run.n_frames > 0
    assert steps.explore_one(ctx.handle, it.id, 0, model_id)["n_frames"] == run.n_frames


def test_decide_marks_done_and_stops_at_max_iterations(ctx):
    store, cid = ctx.store, ctx.campaign_id
    cfg = ctx.cfg
    it = store.start_iteration(cid, cfg.convergence.max_iterations - 1)
    store.update_iteration(it.id, n_explored=10, n_accurate=1, n_candidate=9, n_failed=0)
    d = steps.decide_step(ctx.handle, it.id)
    assert d.stop and d.status == "paused" and "max_iterations" in d.message
    done = store.get_iteration(cid, it.index)
    assert done.status == "done" and done.decision == d.message
    assert "decide" in done.completed_steps
    assert steps.evaluate(ctx, done) == d  # a pure function of the database: re-evaluated on resume


def test_busy_seconds_counts_overlaps_once():
    timing.clear()
    timing._intervals.extend([("md", 0.0, 2.0), ("md", 1.0, 3.0), ("label", 5.0, 6.0)])
    assert timing.busy_seconds() == pytest.approx(4.0)
    assert timing.busy_seconds(kinds={"label"}) == pytest.approx(1.0)
    timing.clear()


def test_task_runner_from_config():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from workflows.config import ExecutionConfig
    from workflows.flows import make_task_runner

    threads = make_task_runner(ExecutionConfig(max_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    dask = make_task_runner(ExecutionConfig(task_runner="dask", max_workers=2))
    assert isinstance(dask, DaskTaskRunner)
    assert dask.cluster_kwargs["n_workers"] == 2
    slurm = make_task_runner(
        ExecutionConfig.model_validate(
            {
                "task_runner": "dask",
                "dask": {
                    "cluster_class": "dask_jobqueue.SLURMCluster",
                    "cluster_kwargs": {"cores": 4},
                    "adapt_kwargs": {"maximum_jobs": 3},
                },
            }
        )
    )
    assert slurm.cluster_kwargs == {"cores": 4} and slurm.adapt_kwargs == {"maximum_jobs": 3}


def test_select_respects_budget_and_is_deterministic(tmp_path: Path):
    from ase.build import bulk

    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            name="sel",
            selection={"max_per_iteration": 5, "strategy": "max-first"},
            bootstrap={"n_structures": 1},
            validation={"n_structures": 1},
            convergence={"label_budget": 3, "max_iterations": 5},
        )
    )
    store = steps.open_store(f"sqlite:///{tmp_path / 'pesflow.sqlite'}")
    ctx = steps.open_context(steps.setup_campaign(store, cfg, tmp_path))
    it = store.start_iteration(ctx.campaign_id, 1)
    from database import Origin, WalkerOutcome
    from workflows.context import seeded_rng

    frames = steps.bootstrap_structures(
        [bulk("Cu", cubic=True).repeat(2)], 6, [0.05], 0.0, seeded_rng("t")
    )
    devs = [0.1, 0.3, 0.2, 0.45, 0.15, 0.12]
    offers = tuple(
        (f, Origin(md_step=10 * k), d, d, False)
        for k, (f, d) in enumerate(zip(frames, devs, strict=True))
    )
    store.record_walker_run(it.id, WalkerOutcome(walker=0, n_frames=6, offers=offers))
    sids = [c.structure_id for c in store.list_candidates(it.id)]
    picked = steps.select_step(ctx.handle, it.id).picked
    assert picked == [sids[3], sids[1], sids[2]]  # budget 3, highest deviation first
    labels = store.list_labels(ctx.campaign_id, limit=None)
    assert sorted(lb.structure_id for lb in labels) == sorted(picked)
    assert (
        steps.select_step(ctx.handle, it.id).picked == picked
    )  # done: the same picks, nothing new
    assert len(store.list_labels(ctx.campaign_id, limit=None)) == 3
    sel = {s.structure_id: s for s in store.list_selections(ctx.campaign_id)}
    assert sel[sids[3]].max_force_dev == pytest.approx(0.45) and sel[sids[3]].reason == "candidate"


def test_run_with_other_config_exits_2(tmp_path: Path):
    from typer.testing import CliRunner

    from pesflow.cli import app

    cfg = write_config(tmp_path / "a.yaml", name="same")
    store = steps.open_store(f"sqlite:///{tmp_path / 'data' / 'pesflow.sqlite'}")
    steps.setup_campaign(store, load_config(cfg), tmp_path / "data")
    steps.close_stores()
    other = write_config(tmp_path / "b.yaml", name="same", seed=7)
    res = CliRunner().invoke(app, ["run", str(other), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 2
    assert res.output.strip() == (
        "error: campaign 'same' already exists with a different "
        "config; use `pesflow resume same` or choose another name"
    )


def test_prefect_env_creates_nested_home(tmp_path: Path, monkeypatch):
    from workflows.settings import configure_prefect_env, get_settings

    monkeypatch.delenv("PREFECT_HOME", raising=False)
    home = tmp_path / "a" / "b" / "prefect"
    done = configure_prefect_env(get_settings(data_dir=tmp_path, prefect_home=home))
    assert done["PREFECT_HOME"] == str(home) and home.is_dir()  # monkeypatch restores env


def test_handles_never_carry_database_passwords(ctx, monkeypatch):
    assert ctx.handle.db_url.startswith("sqlite:///")  # nothing to hide
    url = "postgresql+psycopg://user:s3cret@db.example:5432/pesflow"
    masked = "postgresql+psycopg://user:***@db.example:5432/pesflow"
    monkeypatch.setenv("PESFLOW_DATABASE_URL", url)
    assert _full_url(masked) == url  # e.g. on a Dask worker
    monkeypatch.delenv("PESFLOW_DATABASE_URL")
    with pytest.raises(RuntimeError, match="set PESFLOW_DATABASE_URL"):
        _full_url(masked)


def test_initial_structures_from_file_index_and_surface(tmp_path: Path):
    import ase.io
    from ase.build import bulk

    ase.io.write(
        tmp_path / "s.extxyz", [bulk("Cu", cubic=True).repeat(2), bulk("Cu", cubic=True, a=3.7)]
    )
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            structures=[
                {"file": "s.extxyz", "index": "1"},
                {
                    "generate": {
                        "element": "Cu",
                        "surface": [1, 1, 1],
                        "layers": 3,
                        "vacuum": 6.0,
                        "repeat": [2, 2, 1],
                    }
                },
            ],
        )
    )
    first, slab = steps.initial_structures(cfg)
    assert len(first) == 4 and first.cell[0, 0] == pytest.approx(3.7) and first.calc is None
    assert list(slab.pbc) == [True, True, False] and len(slab) == 4 * 3 * 4
    z = slab.positions[:, 2]
    assert slab.cell[2, 2] - (z.max() - z.min()) == pytest.approx(12.0, abs=1e-6)  # vacuum


def test_pause_requested_mid_iteration_stops_at_the_next_step_and_resumes_there(ctx):
    store, cid = ctx.store, ctx.campaign_id
    calls = []

    def train_then_pause(handle, iteration_id):
        out = steps.train_step(handle, iteration_id)
        if not calls:  # the user presses "pause" while iteration 0 trains
            store.set_campaign_status(cid, "paused", "paused from the dashboard")
        calls.append(iteration_id)
        return out

    d = steps.run_campaign(ctx, engine=Replacing({steps.train_step: train_then_pause}))
    assert d.stop and d.status == "paused"
    assert d.message == "paused from the dashboard (stopped after training iteration 0)"
    it0 = store.get_iteration(cid, 0)
    assert it0.completed_steps == {"seed", "label", "train"} and it0.status == "running"
    assert store.get_campaign(cid).status == "paused"
    # resumed: the trained committee is reused, iteration 0 goes on with exploration
    store.acquire_lease(cid, token="t", host="h", pid=1, purpose="test", ttl_s=60)
    models = len(store.list_models(cid))
    steps.run_campaign(ctx, engine=Replacing({steps.train_step: train_then_pause}))
    assert store.get_iteration(cid, 0).status == "done"
    assert calls[1] == calls[0] and len(store.list_models(cid)) >= models


def test_cancelled_campaign_is_not_revived(ctx):
    store, cid = ctx.store, ctx.campaign_id
    store.set_campaign_status(cid, "cancelled", "stopped by user")
    d = steps.run_campaign(ctx)
    assert d.stop and d.status == "cancelled"
    assert store.get_campaign(cid).status == "cancelled"
    assert store.list_iterations(cid) == []


def test_label_step_refills_a_free_slot_while_a_slow_label_runs(ctx):
    """One slow calculation holds only its own slot: with 2 slots, the other 7 labels go
    through the second slot while the first is still running (a batch would wait for it)."""
    store, cid = ctx.store, ctx.campaign_id
    it = store.start_iteration(cid, 0)
    steps.seed_step(ctx.handle, it.id)
    assert store.count_labels(cid)["pending"] == 8
    pool = ThreadPoolExecutor(max_workers=4)
    release = threading.Event()
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0, "fast_done": 0, "slow": None, "released": None}

    def finished(_):
        with lock:
            state["in_flight"] -= 1

    def fast_finished(_):
        with lock:
            state["fast_done"] += 1
            if state["fast_done"] == 7:
                release.set()

    def slow(label_id: int) -> str:
        state["released"] = release.wait(timeout=30)
        return steps.label_one(ctx.handle, label_id)

    def submit(label_id: int, worker: str):
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
        if state["slow"] is None:
            state["slow"] = label_id
            fut = pool.submit(slow, label_id)
        else:
            fut = pool.submit(steps.label_one, ctx.handle, label_id)
            fut.add_done_callback(fast_finished)
        fut.add_done_callback(finished)
        return fut

    counts = steps.label_step(ctx.handle, it.id, Submitting(submit, 2))
    pool.shutdown()
    assert state["released"] is True  # released by the 7 others finishing, not by timeout
    assert state["peak"] == 2
    assert (counts.done, counts.failed) == (8, 0)
    assert store.count_labels(cid) == {"pending": 0, "running": 0, "done": 8, "failed": 0}


def test_label_step_error_stops_submitting_and_keeps_finished_labels(ctx):
    store, cid = ctx.store, ctx.campaign_id
    it = store.start_iteration(cid, 0)
    steps.seed_step(ctx.handle, it.id)
    submitted: list[int] = []

    def submit(label_id: int, worker: str) -> Future:
        submitted.append(label_id)
        fut: Future = Future()
        if len(submitted) == 2:
            fut.set_exception(RuntimeError("database hiccup on a worker"))
        else:
            fut.set_result(steps.label_one(ctx.handle, label_id))
        return fut

    with pytest.raises(RuntimeError, match="database hiccup"):
        steps.label_step(ctx.handle, it.id, Submitting(submit, 3))
    assert len(submitted) == 3  # the first wave only: nothing new after the error
    # the other two are stored; the failed one stays claimed and is requeued on resume
    assert store.count_labels(cid) == {"pending": 5, "running": 1, "done": 2, "failed": 0}
    assert steps.prepare_resume(ctx)["requeued_running"] == 1
    assert steps.label_step(ctx.handle, it.id) == steps.LabelResult(6, 0, True)


def test_select_judges_the_lattice_not_the_cell_and_counts_every_drop(tmp_path: Path):
    """A strongly tilted cell of fcc Cu (angles of the representation 18-162 deg, far past the
    old 'too skewed' limit) is the same crystal: its frames are picked. Unfit frames are
    dropped and counted per reason in the iteration's statistics, as is every other filter."""
    from ase.build import bulk

    from database import Origin, WalkerOutcome
    from structure_checks.geometry import geometry_problems as check_geometry
    from workflows.context import seeded_rng

    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            name="tilt",
            selection={"max_per_iteration": 3, "strategy": "max-first"},
        )
    )
    store = steps.open_store(f"sqlite:///{tmp_path / 'pesflow.sqlite'}")
    ctx = steps.open_context(steps.setup_campaign(store, cfg, tmp_path))
    it = store.start_iteration(ctx.campaign_id, 1)
    cubic = bulk("Cu", cubic=True).repeat(2)
    tilted = cubic.copy()
    a, b, c = cubic.cell.array
    tilted.set_cell([a, b + 3 * a, c - 2 * b], scale_atoms=False)
    tilted.wrap()
    assert max(abs(x - 90) for x in tilted.cell.angles()) > 60  # a tilted representation
    assert check_geometry(tilted) == []  # of a valid lattice
    frames = steps.bootstrap_structures([tilted], 6, [0.05], 0.0, seeded_rng("t"))
    close = frames[0].copy()
    close.positions[1] = close.positions[0] + [0.3, 0, 0]
    sparse = frames[1].copy()
    sparse.set_cell(sparse.cell * 4.0, scale_atoms=True)
    devs = [0.1, 0.3, 0.2, 0.45, 0.15, 0.12, 0.9, 0.8]
    offers = tuple(
        (f, Origin(md_step=10 * k), d, d, False)
        for k, (f, d) in enumerate(zip([*frames, close, sparse], devs, strict=True))
    )
    store.record_walker_run(it.id, WalkerOutcome(walker=0, n_frames=8, offers=offers))
    sids = [c.structure_id for c in store.list_candidates(it.id)]
    picked = steps.select_step(ctx.handle, it.id).picked
    assert picked == [sids[3], sids[1], sids[2]]  # the tilted frames, highest deviation first
    (metrics,) = [m for m in store.iteration_metrics(ctx.campaign_id) if m.iteration_id == it.id]
    assert metrics.dropped == {
        "unfit geometry: atoms too close": 1,
        "unfit geometry: volume per atom too large": 1,
        "over max_per_iteration or too similar": 3,
    }
    assert sum(metrics.dropped.values()) + len(picked) == len(sids)  # every frame accounted for
    assert steps.select_step(ctx.handle, it.id).picked == picked  # done: nothing recounted
    (again,) = [m for m in store.iteration_metrics(ctx.campaign_id) if m.iteration_id == it.id]
    assert again.dropped == metrics.dropped


def test_trust_section_reaches_the_walkers(tmp_path: Path):
    """energy_lo / energy_hi (eV/atom) and the relative mode's eps are config data."""
    from workflows.explore import walker_spec

    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            trust={"lo": 0.1, "hi": 0.8, "relative_eps": 0.5, "energy_lo": 0.01, "energy_hi": 0.1},
        )
    )
    spec = walker_spec(cfg, cfg.exploration.walkers[0], seed=1)
    assert (spec.trust.energy_lo, spec.trust.energy_hi, spec.trust.relative_eps) == (0.01, 0.1, 0.5)
    with pytest.raises(ConfigError, match="energy_lo must be < energy_hi"):
        load_config(write_config(tmp_path / "d.yaml", trust={"energy_lo": 0.2, "energy_hi": 0.1}))
