"""On-the-fly mode (``exploration.mode: on-the-fly``, decision record 0010): one long MD per
walker that pauses at each uncertain step, has the frame labelled (EMT, counted below anything
pesflow stores by :mod:`tests.workflows._counting`), updates the committee and goes on — a step
at/above ``hi`` is redone after the update. A ``kill -9`` while a label's outcome is on disk
but not yet in the database resumes without any frame labelled twice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from ._campaigns import write_config
from ._counting import ENV, dft_runs
from .test_resume import (  # noqa: F401  (prefect_api_url: a fixture)
    Site,
    assert_each_structure_computed_once,
    kill_group,
    prefect_api_url,
)

UPDATE_EPOCHS = 10
STEPS = 12


def otf_config(path: Path, name: str = "otf", **over) -> Path:
    """A small on-the-fly Cu/EMT campaign: 8 seed labels, one 300 K walker of ``STEPS`` steps
    whose uncertainty (committee of 3, tiny) crosses lo = 0.16 eV/Å at step 6 and hi = 0.22 a
    few times (measured: 11 labels, 3 of them redos)."""
    sections = {
        "name": name,
        "bootstrap": {"n_structures": 4, "rattle": 0.05, "strain": 0.02},
        "validation": {"n_structures": 4, "rattle": [0.03, 0.06], "strain": 0.03},
        "model": {"n_members": 3, "channels": 8, "n_layers": 1},
        "training": {"max_epochs": 80, "max_time_s": 20, "warm_start_epochs": 30},
        "exploration": {
            "mode": "on-the-fly",
            "walkers": [{"temperature": 300, "steps": STEPS, "timestep": 2.0}],
            "on_the_fly": {"update_epochs": UPDATE_EPOCHS, "max_labels": 20},
        },
        "trust": {"lo": 0.16, "hi": 0.22},
        "convergence": {"max_iterations": 30},
        **over,
    }
    return write_config(path, **sections)


def otf_frames(store, cid) -> list:
    """The on-the-fly selected structures, in selection order."""
    sels = [s for s in store.list_selections(cid) if s.strategy == "on-the-fly"]
    return store.get_structures([s.structure_id for s in sels])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[dict]:
    """The campaign run once in process, its DFT runs counted."""
    from workflows import steps
    from workflows.config import load_config

    root = tmp_path_factory.mktemp("otf")
    log = root / "dft.log"
    old = os.environ.get(ENV)
    os.environ[ENV] = str(log)
    try:
        store = steps.open_store(f"sqlite:///{root / 'pesflow.sqlite'}")
        handle = steps.setup_campaign(store, load_config(otf_config(root / "c.yaml")), root)
        decision = steps.run_campaign(handle)
        ctx = steps.open_context(handle)
        yield {"decision": decision, "ctx": ctx, "log": log, "root": root}
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old
        steps.close_stores()


def test_labels_come_during_the_run_with_their_walker_step(run):
    ctx, d = run["ctx"], run["decision"]
    store, cid = ctx.store, ctx.campaign_id
    assert d.status == "converged" and "on-the-fly run finished" in d.message, d
    its = store.list_iterations(cid)
    last = store.list_walker_runs(its[-1].id)[0]
    assert last.n_candidate == last.n_failed == 0 and not last.stopped_early
    frames = otf_frames(store, cid)
    assert len(frames) >= 3
    steps_ = [f.info["walker_step"] for f in frames]
    assert all(f.info["on_the_fly"] and f.info["walker_index"] == 0 for f in frames)
    assert [f.md_step for f in frames] == steps_
    assert steps_ == sorted(steps_) and 0 < steps_[-1] <= STEPS
    # labelled by EMT once each, each before the update that trained on it
    runs = assert_each_structure_computed_once(store, cid, run["log"])
    assert sum(runs.values()) == 8 + len(frames)  # seed labels + one per pause
    labels = {lb.structure_id: lb for lb in store.list_labels(cid, limit=None)}
    for f in frames:
        lb = labels[f.id]
        it = store.get_iteration_by_id(lb.iteration_id)
        nxt = store.model_of_iteration(its[it.index + 1].id)
        assert lb.id in nxt.training_label_ids and lb.finished_at <= nxt.created_at


def test_model_updated_after_each_label(run):
    ctx = run["ctx"]
    store, cid = ctx.store, ctx.campaign_id
    models = store.list_models(cid)
    n_its = len(store.list_iterations(cid))
    assert len(models) == n_its > 2  # one update per label
    assert len({m.checkpoint_sha256 for m in models}) == len(models)
    assert models[0].validation["warm_start"] is False
    for m in models[1:]:
        assert m.validation["warm_start"] and m.validation["max_epochs"] == UPDATE_EPOCHS
        assert m.parent_model_id is not None
    from workflows.steps import summary_rows

    assert len(summary_rows(store, cid)) == n_its  # status / dashboard rows


def test_a_step_above_hi_is_labelled_then_redone(run):
    ctx = run["ctx"]
    frames = otf_frames(ctx.store, ctx.campaign_id)
    redos = [i for i, f in enumerate(frames) if f.info["action"] == "redo"]
    assert redos, [f.info for f in frames]
    hi = ctx.cfg.trust.hi
    for i in redos:
        assert frames[i].info["uncertainty"] >= hi
        # the step is repeated with the updated model: the next pause is at the same step
        # (again above hi, or a candidate) — never a later one
        assert frames[i + 1].info["walker_step"] == frames[i].info["walker_step"]
    assert all(f.info["uncertainty"] < hi for f in frames if f.info["action"] == "label")


# --------------------------------------------------------------------------- unit level
class _Spread(Calculator):
    """EMT forces, and a committee whose spread at the n-th evaluation is ``spread(n)``."""

    implemented_properties: ClassVar[list[str]] = ["energy", "forces", "stress"]

    def __init__(self, spread) -> None:
        super().__init__()
        self.spread, self.n, self.emt = spread, 0, EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = atoms.copy()
        a.calc = self.emt
        f = a.get_forces()
        d = self.spread(self.n)
        self.n += 1
        self.results = {
            "energy": a.get_potential_energy(),
            "forces": f,
            "forces_committee": np.stack([f + d, f - d]),  # max deviation: d sqrt(3)
        }


def _segment(spread, start=None, max_redos=3):
    from mlip_core.md import WalkerSpec
    from mlip_core.monitor import Trust
    from mlip_core.on_the_fly import run_segment

    spec = WalkerSpec(n_steps=20, temperature_K=300, seed=3, trust=Trust(lo=0.1, hi=0.5))
    atoms = bulk("Cu", cubic=True) * (2, 2, 2)
    return atoms, run_segment(atoms, start, _Spread(spread), spec, max_redos=max_redos)


def test_decision_per_step():
    from mlip_core.on_the_fly import otf_action

    assert [otf_action(s) for s in ("accurate", "candidate", "failed")] == [
        "continue",
        "label",
        "redo",
    ]


def test_segment_pauses_continues_and_redoes():
    from mlip_core.on_the_fly import END, LABEL, REDO, STOP

    # a candidate at evaluation 4 (step 4 — step 0 is evaluation 0): continue from that frame
    atoms, seg = _segment(lambda n: 0.1 if n == 4 else 0.0)
    assert seg.action == LABEL and seg.frame.info["step"] == seg.state.step == 4
    again = _segment(lambda n: 0.1 if n == 4 else 0.0)[1]  # deterministic: the same frame
    assert np.array_equal(again.frame.positions, seg.frame.positions)
    # continued: the start frame is not judged again; the walker ends at its last step
    _, end = _segment(lambda n: 0.0, start=seg.state)
    assert end.action == END and end.state.step == 20 and end.n_steps == 16
    # above hi at step 4: label it, and the next segment redoes step 4 from step 3
    _, redo = _segment(lambda n: 1.0 if n == 4 else 0.0)
    assert redo.action == REDO and redo.frame.info["step"] == 4 and redo.state.step == 3
    assert redo.state.redos == 1 and redo.frame.info["uncertainty"] >= 0.5
    _, twice = _segment(lambda n: 1.0, start=redo.state)
    assert twice.action == REDO and twice.state.step == 3 and twice.state.redos == 2
    _, lost = _segment(lambda n: 1.0, start=twice.state, max_redos=2)
    assert lost.action == STOP and "still above after 2 update" in lost.stop_reason
    # a continued walker's state carries its momenta (the MD continues, not restarts)
    assert np.abs(seg.state.momenta).sum() > 0 and np.array_equal(
        seg.state.apply(atoms).get_momenta(), seg.state.momenta
    )


def test_on_the_fly_runs_md_walkers_only():
    from workflows.config import ConfigError, parse_config

    base = {
        "name": "x",
        "structures": [{"generate": {"element": "Cu", "repeat": [2, 2, 2]}}],
        "labeler": {"name": "emt"},
        "exploration": {
            "mode": "on-the-fly",
            "walkers": [{"kind": "neb", "initial": 0, "final": 0}],
        },
    }
    with pytest.raises(ConfigError, match="on-the-fly mode runs md walkers only"):
        parse_config(base, check_files=False)


# --------------------------------------------------------------------------- kill -9
@pytest.fixture
def site(tmp_path, prefect_api_url) -> Iterator[Site]:  # noqa: F811
    from database import sqlite_url

    data = tmp_path / "data"
    data.mkdir()
    s = Site(tmp_path, "sqlite", sqlite_url(data), data, tmp_path / "dft.log", prefect_api_url)
    try:
        yield s
    finally:
        s.close()


def test_kill_9_mid_run_then_resume_labels_nothing_twice(site: Site):
    """Killed while the 3rd on-the-fly label's outcome is on disk and not yet stored; resumed:
    that outcome is read back, the walker continues from its last segment, nothing is
    labelled twice and the run finishes."""
    cfg = otf_config(site.tmp / "otf.yaml", name="otfkill")
    store = site.store
    p = site.start("run", str(cfg), block="store_result:11:")  # 8 seed labels, then 3rd pause
    site.wait_for(p, lambda: p.marker.exists(), "the 3rd on-the-fly label", timeout=120)
    cid = store.get_campaign("otfkill").id
    (label_id,) = p.blocked_at()
    assert (site.data / "labels" / str(label_id) / "round-0" / "outcome.json").is_file()
    before = len(otf_frames(store, cid))
    n_its = len(store.list_iterations(cid))
    kill_group(p.popen)
    r = site.start("resume", "otfkill")
    assert site.finish(r, timeout=120) == 0, r.output()
    rec = store.get_campaign("otfkill")
    assert rec.status == "converged", (rec.status, rec.status_message)
    runs = assert_each_structure_computed_once(store, cid, site.dft_log)
    frames = otf_frames(store, cid)
    assert len(frames) > before and sum(runs.values()) == 8 + len(frames)
    steps_ = [f.info["walker_step"] for f in frames]
    assert steps_ == sorted(steps_)
    # each segment ran once: the resumed run went on from where the killed one stopped
    its = store.list_iterations(cid)
    assert len(its) > n_its and all(len(store.list_walker_runs(i.id)) == 1 for i in its)
    assert len(store.list_models(cid)) == len(its)
    assert dft_runs(site.dft_log)  # the counter saw the runs


def test_failure_rate_is_over_the_campaign_in_on_the_fly_mode():
    """An on-the-fly iteration labels one frame: one failed DFT run must not be a 100 % rate."""
    from types import SimpleNamespace

    from workflows.context import CampaignFailedError
    from workflows.label import check_failure_rate

    def lab(status: str, iteration_id: int) -> SimpleNamespace:
        return SimpleNamespace(
            status=status,
            iteration_id=iteration_id,
            failure_kind="scf_unconverged" if status == "failed" else None,
            failure_message="SCF did not converge",
        )

    labels = [lab("done", i) for i in range(1, 6)] + [lab("failed", 6)]
    updates: list[dict] = []

    class Store:
        def list_labels(self, campaign_id, *, iteration_id=None, limit=None):
            return [lb for lb in labels if iteration_id in (None, lb.iteration_id)]

        def update_iteration(self, iid, **kw):
            updates.append(kw)

    def ctx(mode: str) -> SimpleNamespace:
        cfg = SimpleNamespace(
            exploration=SimpleNamespace(mode=mode),
            labeler=SimpleNamespace(max_failure_rate=0.5),
        )
        return SimpleNamespace(store=Store(), campaign_id=1, cfg=cfg)

    it = SimpleNamespace(id=6, index=6)
    check_failure_rate(ctx("on-the-fly"), it)  # 1 of 6 so far: goes on
    assert updates == []
    with pytest.raises(CampaignFailedError, match="1/1 labels failed"):
        check_failure_rate(ctx("batch"), it)  # a batch iteration whose labels all failed
    labels += [lab("failed", i) for i in range(7, 11)]  # 5 of 10 failed: not above 0.5
    check_failure_rate(ctx("on-the-fly"), SimpleNamespace(id=10, index=10))
    labels.append(lab("failed", 11))  # 6 of 11
    with pytest.raises(CampaignFailedError, match="6/11 labels of the campaign so far failed"):
        check_failure_rate(ctx("on-the-fly"), SimpleNamespace(id=11, index=11))
    assert updates == [{"status": "failed"}] * 2
