"""Validation per regime: seeded and held-out frames of every regime, per-regime errors on
the model row, the convergence rule on accuracy, the config's unit-slip and coverage checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workflows import steps
from workflows.config import ConfigError, load_config
from workflows.decide import accuracy
from workflows.regimes import structure_regimes, validation_shares, walker_regime
from workflows.select import is_holdout

from ._campaigns import write_config

BULK = {"generate": {"element": "Cu", "lattice_constant": 3.61, "repeat": [2, 2, 2]}}
SLAB = {
    "generate": {
        "element": "Cu",
        "lattice_constant": 3.61,
        "surface": [1, 1, 1],
        "layers": 3,
        "repeat": [2, 2, 1],
        "vacuum": 6.0,
    }
}


def _config(path: Path, **over):
    sections = {
        "name": "regimes",
        "structures": [BULK, SLAB],
        "bootstrap": {"n_structures": 4},
        "validation": {"n_structures": 10, "min_per_regime": 4, "holdout_fraction": 0.5},
        "training": {"max_epochs": 4, "max_time_s": 20, "warm_start_epochs": 2},
        "exploration": {
            "walkers": [
                {"temperature": 900, "steps": 20, "record_every": 5, "start": 0},
                {"temperature": 900, "steps": 20, "record_every": 5, "start": 1},
            ]
        },
        "trust": {"lo": 0.001, "hi": 9.0},  # everything a candidate: picks in both regimes
        "selection": {"max_per_iteration": 6, "strategy": "random"},
    }
    for key, value in over.items():
        sections[key] = {**sections.get(key, {}), **value} if isinstance(value, dict) else value
    return write_config(path, **sections)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """Two iterations of a bulk + (111) slab campaign, in process (tiny trainings)."""
    root = tmp_path_factory.mktemp("regimes")
    cfg = load_config(_config(root / "c.yaml"))
    store = steps.open_store(f"sqlite:///{root / 'pesflow.sqlite'}")
    handle = steps.setup_campaign(store, cfg, root)
    steps.run_campaign(handle, max_iterations=2)
    ctx = steps.open_context(handle)
    yield ctx
    steps.close_stores()


def test_every_regime_has_validation_frames_and_errors(campaign):
    ctx = campaign
    store, cid = ctx.store, ctx.campaign_id
    assert ctx.initial_regimes == ["bulk-fcc", "surface-111"]
    sels = store.list_selections(cid)
    seeded = [s for s in sels if s.reason == "validation" and not is_holdout(s)]
    records = store.get_structures([s.structure_id for s in sels])
    # stored with the structure, except a walker's start frame: the initial structure itself
    initial = set(ctx.runtime["initial_structure_ids"])
    assert all(r.info.get("regime") or r.id in initial for r in records)
    regime = dict(zip([r.id for r in records], structure_regimes(ctx, records), strict=True))
    assert sorted(regime[s.structure_id] for s in seeded) == ["bulk-fcc"] * 5 + ["surface-111"] * 5
    # explored frames carry their walker's regime; a share of each regime's picks is held out
    held = [s for s in sels if is_holdout(s)]
    picked = held + [s for s in sels if s.reason == "candidate"]
    assert {regime[s.structure_id] for s in picked} == {"bulk-fcc", "surface-111"}
    for name in ("bulk-fcc", "surface-111"):
        n = sum(regime[s.structure_id] == name for s in picked)
        h = sum(regime[s.structure_id] == name for s in held)
        assert h == int(np.floor(0.5 * n + 0.5)), (name, n, h)
    # held-out frames are labelled and never trained on
    val_sids = {s.structure_id for s in held}
    val_labels = {lb.id for lb in store.list_labels(cid, limit=None) if lb.structure_id in val_sids}
    assert len(val_labels) == len(val_sids) > 0
    models = store.list_models(cid)
    for m in models:
        assert not set(m.training_label_ids.tolist()) & val_labels
    # the second model is evaluated on the seeded and the held-out frames of both regimes
    v = models[-1].validation
    assert v["n_val"] == 10 + len(
        [s for s in held if s.iteration_id == store.get_iteration(cid, 0).id]
    )
    per = v["regimes"]
    assert set(per) == {"bulk-fcc", "surface-111"}
    assert sum(m["n_frames"] for m in per.values()) == v["n_val"]
    for m in per.values():
        assert 0 < m["force_mae"] <= m["force_rmse"] <= m["force_max"]
        assert m["energy_rmse"] <= m["energy_max"]
    assert "stress_rmse_gpa" in per["bulk-fcc"]  # EMT labels a periodic cell's stress ...
    assert "stress_rmse_gpa" not in per["surface-111"]  # ... not a slab's
    assert v["stress_weight"] > 0  # auto: on, the bulk labels carry stress
    assert max(m["force_rmse"] for m in per.values()) >= v["val_force_rmse"]


def test_parity_data_and_tables_show_the_regimes(campaign):
    from rich.console import Console

    from database.queries import summary_rows
    from workflows.parity import read_parity
    from workflows.tables import markdown_regimes, regime_table

    ctx = campaign
    m = ctx.store.list_models(ctx.campaign_id)[-1]
    parity = read_parity(ctx.resolve(m.validation["parity_uri"]))
    assert {k: p["n_frames"] for k, p in parity.items()} == {
        k: r["n_frames"] for k, r in m.validation["regimes"].items()
    }
    slab = parity["surface-111"]
    assert (
        len(slab["force_pred"])
        == len(slab["force_ref"])
        == 3 * len(ctx.initial[1]) * slab["n_frames"]
    )
    df = np.subtract(slab["force_pred"], slab["force_ref"])
    assert np.sqrt(np.mean(df**2)) == pytest.approx(
        m.validation["regimes"]["surface-111"]["force_rmse"]
    )
    rows = summary_rows(ctx.store, ctx.campaign_id)
    assert set(rows[-1]["val_regimes"]) == {"bulk-fcc", "surface-111"}
    con = Console(width=200, record=True)
    con.print(regime_table(rows))
    text = con.export_text()
    assert "surface-111" in text and "F max meV/Å" in text
    assert "| surface-111 |" in markdown_regimes(rows)


def test_each_model_stores_its_bound_and_the_next_checks_it(campaign):
    """The first committee's 90 % bound (10 validation frames: pooled) is stored with it; the
    second committee's metrics say how often that bound held on the frames labelled in
    between (the first committee never saw them), recomputed here from the checkpoints."""
    from database.queries import summary_rows
    from mlip_core.calibration import RegimeCalibration
    from mlip_core.labelled import predict_frames
    from workflows.train import load_model, training_data

    ctx = campaign
    first, second = ctx.store.list_models(ctx.campaign_id)
    cal = RegimeCalibration.from_dict(first.validation["calibration"])
    assert cal.pooled.method == "conformal" and cal.pooled.coverage == 0.9
    assert cal.pooled.n_points == first.validation["n_val"] == 10 and cal.pooled.scale > 0
    cover = second.validation["calibration_coverage"]
    new = set(second.training_label_ids.tolist()) - set(first.training_label_ids.tolist())
    assert cover["all"]["n"] == len(new) > 0
    train, _, ids = training_data(ctx, second.training_label_ids.tolist())
    frames = [a for a, i in zip(train, ids, strict=True) if i in new]
    pred = predict_frames(load_model(ctx, first), frames)
    bound = cal.pooled.scale * pred.max_devi_f
    assert cover["all"]["covered"] == pytest.approx(np.mean(pred.max_force_errors() <= bound))
    rows = summary_rows(ctx.store, ctx.campaign_id)
    shown = next(iter(rows[-1]["val_regimes"].values()))
    assert shown["bound_scale"] is not None and shown["covered_n"] is not None


def _record(store, cid, index, accurate, regimes):
    it = store.start_iteration(cid, index)
    store.update_iteration(it.id, n_explored=10, n_accurate=accurate)
    store.record_model(
        cid,
        member_count=2,
        checkpoint_uri=f"m{index}.pt",
        checkpoint_sha256="0" * 64,
        training_label_ids=[],
        iteration_id=it.id,
        validation={
            "val_force_rmse": 0.03,
            "regimes": {k: {"force_rmse": v, "n_frames": 4} for k, v in regimes.items()},
        },
    )
    return store.get_iteration_by_id(it.id)


def test_agreement_without_accuracy_is_not_convergence(tmp_path: Path):
    cfg = load_config(
        _config(tmp_path / "c.yaml", convergence={"patience": 1, "val_force_rmse": 0.05})
    )
    store = steps.open_store(f"sqlite:///{tmp_path / 'pesflow.sqlite'}")
    ctx = steps.open_context(steps.setup_campaign(store, cfg, tmp_path))
    # all frames accurate, the overall RMSE (30 meV/Å) on target, but the slab at 120 meV/Å
    it = _record(store, ctx.campaign_id, 0, 10, {"bulk-fcc": 0.02, "surface-111": 0.12})
    d = steps.evaluate(ctx, it)
    assert not d.stop and d.status == "running"
    assert "surface-111" in d.message and "120.0 meV/Å > 50.0 meV/Å" in d.message
    it = _record(store, ctx.campaign_id, 1, 10, {"bulk-fcc": 0.02, "surface-111": 0.045})
    d = steps.evaluate(ctx, it)
    assert d.stop and d.status == "converged"
    assert "worst regime surface-111" in d.message and "45.0 meV/Å" in d.message
    # without a target, agreement alone decides (the rule of campaigns that set none)
    conv = cfg.convergence.model_copy(update={"val_force_rmse": None})
    assert accuracy(conv, {"regimes": {"a": {"force_rmse": 9.0}}})[0]
    # a model with no validation error at all never meets a target
    assert not accuracy(cfg.convergence, {})[0]
    # a model from before per-regime metrics: its overall RMSE stands for it
    assert accuracy(cfg.convergence, {"val_force_rmse": 0.04})[0]


def test_config_refuses_unit_slips_and_uncovered_regimes(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"convergence.val_force_rmse: 50 eV/Å .* meV/Å\? \(0.05"):
        load_config(_config(tmp_path / "a.yaml", convergence={"val_force_rmse": 50}))
    with pytest.raises(ConfigError, match=r"validation.n_structures=6 cannot give each of the 2 "):
        load_config(_config(tmp_path / "b.yaml", validation={"n_structures": 6}))
    with pytest.raises(ConfigError, match=r"training.stress_weight"):
        load_config(_config(tmp_path / "c.yaml", training={"stress_weight": -1}))
    cfg = load_config(_config(tmp_path / "d.yaml", training={"stress_weight": 0}))
    assert cfg.training.stress_weight == 0.0
    assert validation_shares(9, ["bulk", "slab", "bulk", "melt"]) == {
        "bulk": 3,
        "slab": 3,
        "melt": 3,
    }
    assert validation_shares(8, ["bulk", "slab", "melt"]) == {"bulk": 3, "slab": 3, "melt": 2}
    w = cfg.exploration.walkers[1]
    assert walker_regime(w, 1, ["bulk-fcc", "surface-111"]) == "surface-111"
    named = w.model_copy(update={"regime": "hot-slab"})
    assert walker_regime(named, 1, ["bulk-fcc", "surface-111"]) == "hot-slab"
    assert walker_regime(w, 5, ["bulk-fcc"]) == "explored"


def test_calibrated_trust_window_is_a_tolerance_on_the_bound():
    """trust.calibrated: lo / hi are errors (eV/Å); a walker's window on the deviation divides
    them by its regime's 90 % bound scale (pooled when the regime has none of its own)."""
    from mlip_core.calibration import Calibration, RegimeCalibration
    from mlip_core.monitor import Trust
    from workflows.calibrate import calibrated_trust

    def conformal(scale: float) -> Calibration:
        return Calibration("conformal", scale=scale, n_points=20, coverage=0.9)

    cal = RegimeCalibration(pooled=conformal(2.0), by_regime={"melt": conformal(4.0)}).to_dict()
    trust = Trust(lo=0.1, hi=1.0)
    melt, note = calibrated_trust(trust, cal, "melt")
    assert (melt.lo, melt.hi) == pytest.approx((0.025, 0.25)) and "its own" in note
    bulk, note = calibrated_trust(trust, cal, "bulk-fcc")
    assert (bulk.lo, bulk.hi) == pytest.approx((0.05, 0.5)) and "pooled" in note
    raw, note = calibrated_trust(trust, None, "bulk-fcc")
    assert raw is trust and "raw deviation" in note


def test_calibrated_trust_needs_the_absolute_deviation(tmp_path: Path):
    path = _config(
        tmp_path / "c.yaml", trust={"lo": 0.1, "hi": 1.0, "calibrated": True, "relative": True}
    )
    with pytest.raises(ConfigError, match="calibrated: the bound calibrates the absolute"):
        load_config(path)


def test_adaptive_level_keeps_the_most_uncertain_share_of_the_frames(campaign):
    """selection.max_candidate_fraction: of the iteration's frames below hi (accurate ones
    included), at most that share stay offered, the most uncertain; the rest are counted.
    With a calibrated window and one (pooled) bound the frames compare the same way."""
    import dataclasses

    from workflows.select import _adaptive

    ctx = campaign
    store = ctx.store
    it = store.get_iteration(ctx.campaign_id, 1)
    cands = {c.structure_id: c.uncertainty for c in store.list_candidates(it.id)}
    below = int(it.n_accurate) + sum(1 for u in cands.values() if u < ctx.cfg.trust.hi)
    dropped: dict[str, int] = {}
    keep = _adaptive(ctx, it, cands, list(cands), 0.25, dropped)
    assert 0 < len(keep) <= 0.25 * below + 1
    gone = set(cands) - set(keep)
    assert gone and min(cands[s] for s in keep) >= max(cands[s] for s in gone)
    assert sum(dropped.values()) == len(gone)
    cal_trust = ctx.cfg.trust.model_copy(update={"calibrated": True})
    calibrated = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"trust": cal_trust}))
    assert store.model_of_iteration(it.id).validation["calibration"] is not None
    assert _adaptive(calibrated, it, cands, list(cands), 0.25, {}) == keep
