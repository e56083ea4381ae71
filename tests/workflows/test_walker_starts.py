"""Walkers that start from labelled or explored frames, ramped walkers' frame temperatures,
and the one distance rule of the explore step (workflows.walker_starts, workflows.explore)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workflows import steps
from workflows.config import ConfigError, load_config, parse_config
from workflows.explore import trust_of

from ._campaigns import REDUCED, write_config

WALKERS = [
    # iteration 0: a heating ramp from the initial structure (frames offered: lo = 0)
    {"temperature": 300, "temperature_end": 1500, "steps": 20, "record_every": 5},
    {"temperature": 600, "steps": 10, "record_every": 5, "start_from": "explored",
     "start_rule": "uncertain", "count": 2},
    {"temperature": 600, "steps": 10, "record_every": 5, "start_from": "labelled", "count": 2},
]  # fmt: skip


@pytest.fixture
def ctx(tmp_path: Path):
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            name="starts",
            bootstrap={"n_structures": 4},
            validation={"n_structures": 4},
            training={"max_epochs": 3, "max_time_s": 5},
            exploration={"walkers": WALKERS},
            trust={"lo": 0.0, "hi": 9.0},
            selection={"max_per_iteration": 4, "strategy": "max-first"},
        )
    )
    store = steps.open_store(f"sqlite:///{tmp_path / 'pesflow.sqlite'}")
    return steps.open_context(steps.setup_campaign(store, cfg, tmp_path))


def test_walkers_start_from_labelled_and_explored_frames_deterministically(ctx):
    store, cid = ctx.store, ctx.campaign_id
    it0 = store.start_iteration(cid, 0)
    steps.seed_step(ctx.handle, it0.id)
    steps.label_step(ctx.handle, it0.id)
    held_out = {s.structure_id for s in store.list_selections(cid) if s.reason == "validation"}
    boot = {s.structure_id for s in store.list_selections(cid) if s.reason == "bootstrap"}

    plans0 = steps.walker_plans(ctx, it0)
    # nothing explored before iteration 0: those walkers start from an initial structure, noted
    assert [p.start_structure for p in plans0[1:3]] == [None, None]
    assert "no explored frames before iteration 0" in plans0[1].start_note
    # labelled at iteration 0: the bootstrap labels, never the held-out validation frames
    assert {p.start_structure for p in plans0[3:]} <= boot

    model_id = steps.train_step(ctx.handle, it0.id).model_id
    steps.explore_step(ctx.handle, it0.id)
    # the ramp: each offered frame keeps the target temperature it was taken at
    # (step 0 is the initial structure itself, stored once, without an MD origin)
    ramp = [c for c in store.list_candidates(it0.id, walkers=[0]) if c.md_step]
    assert len(ramp) >= 3
    for c in ramp:
        assert store.get_structure(c.structure_id).temperature == 300 + 1200 * c.md_step / 20
    steps.select_step(ctx.handle, it0.id)
    steps.label_step(ctx.handle, it0.id)

    it1 = store.start_iteration(cid, 1)
    plans1 = steps.walker_plans(ctx, it1)
    offered = [c for c in store.list_candidates(it0.id) if not c.cut]
    ranked = sorted(offered, key=lambda c: (-c.uncertainty, c.structure_id))
    assert [p.start_structure for p in plans1[1:3]] == [r.structure_id for r in ranked[:2]]
    done = {lb.structure_id for lb in store.list_labels(cid, status="done", limit=None)}
    for p in plans1[3:]:
        assert p.start_structure in done - held_out and p.start_note is None
    # a resumed iteration (a fresh context, as after a crash) picks the same starts
    assert steps.walker_plans(steps.open_context(ctx.handle), it1) == plans1

    stats = steps.explore_one(ctx.handle, it1.id, 1, model_id)
    assert stats["status"] == "done" and stats["n_frames"] > 0
    offered1 = store.list_candidates(it1.id, walkers=[1])
    start = plans1[1].start_structure
    assert [c.structure_id for c in offered1 if c.md_step == 0] == [start]  # it started there
    later = [c for c in offered1 if c.md_step]
    assert later and all(
        store.get_structure(c.structure_id).info["start_structure_id"] == start for c in later
    )
    # its frames stand for the regime of the frame it started from
    from workflows.regimes import structure_regimes

    (regime,) = structure_regimes(ctx, [store.get_structure(start)])
    assert {store.get_structure(c.structure_id).info["regime"] for c in later} == {regime}


def test_start_from_refusals_are_one_line():
    bad = dict(REDUCED)
    bad["exploration"] = {"walkers": [{"temperature": 300, "start": 0, "start_from": "labelled"}]}
    with pytest.raises(ConfigError, match="start=0 names an initial structure but start_from"):
        parse_config(bad)
    bad["exploration"] = {
        "walkers": [{"temperature": 300, "ensemble": "nve", "temperature_end": 9}]
    }
    with pytest.raises(ConfigError, match="temperature_end on an nve walker"):
        parse_config(bad)
    bad["exploration"] = {"walkers": [{"temperature": 300, "start_rule": "uncertain"}]}
    with pytest.raises(ConfigError, match="start_rule='uncertain' chooses among stored frames"):
        parse_config(bad)
    bad["exploration"] = {"walkers": [{"temperature": 300}], "min_distance_fraction": 2}
    with pytest.raises(ConfigError, match=r"min_distance_fraction: .*0\.9"):
        parse_config(bad)


def test_min_distance_zero_turns_the_guard_off_for_the_calculator_too():
    """A user's ``exploration.min_distance: 0`` reaches the committee calculator as 'no check'
    (it used to become 0.5 Å there); the default is the pair-relative guard."""
    data = dict(REDUCED)
    default = trust_of(parse_config(data)).guard
    assert default.min_distance is None and default.limit(29, 29) == pytest.approx(1.584)
    data["exploration"] = {**REDUCED["exploration"], "min_distance": 0}
    guard = trust_of(parse_config(data)).guard
    assert guard.off
    from ase import Atoms

    pair = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[9, 9, 9], pbc=True)
    assert guard.violation(pair) is None and default.violation(pair) is not None
    assert np.isclose(default.violation(pair)[0], 0.3)
