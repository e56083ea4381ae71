"""The ``model.repulsion`` config (the ZBL baseline, on by default) and campaigns stored before
it existed, which keep running without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflows import steps
from workflows.config import ConfigError, load_config, parse_config
from workflows.context import RUNTIME_KEY, close_stores
from workflows.setup import CampaignConflictError

from ._campaigns import REDUCED, write_config

SMALL = {
    "bootstrap": {"n_structures": 4},
    "validation": {"n_structures": 4},
    "training": {"max_epochs": 4, "max_time_s": 600, "warm_start_epochs": 2},
}


def _parse(repulsion) -> object:
    data = {**REDUCED, "model": {**REDUCED["model"], "repulsion": repulsion}}
    return parse_config(data, check_files=False).model


def test_default_on_off_and_pair_overrides() -> None:
    on = parse_config(REDUCED, check_files=False).model
    rep = on.build_repulsion([29, 79])
    assert rep.radii(29, 29) == pytest.approx((1.32, 1.98))
    assert _parse(None).repulsion is None and _parse(None).build_repulsion([29]) is None
    assert _parse({"kind": "none"}).repulsion is None
    custom = _parse({"pairs": {"Au-Cu": [1.3, 2.0]}, "outer_scale": 0.7}).build_repulsion([29, 79])
    assert custom.radii(29, 79) == (1.3, 2.0)
    assert custom.radii(29, 29)[1] == pytest.approx(0.7 * 2.64)


@pytest.mark.parametrize(
    ("repulsion", "message"),
    [
        ({"pairs": {"Qq-Cu": [1, 2]}}, "model.repulsion.pairs: pair 'Qq-Cu': unknown element"),
        ({"pairs": {"CuAu": [1, 2]}}, "model.repulsion.pairs: pair 'CuAu': give two element"),
        ({"pairs": {"Cu-Au": [2, 1]}}, "model.repulsion.pairs: pair 'Cu-Au': inner radius"),
        ({"pairs": {"Cu-Au": [1, 2], "Au-Cu": [1, 2]}}, "'Au-Cu' is given twice"),
        ({"pairs": {"Cu-Au": [1, 6]}}, "repulsion.pairs.Cu-Au: outer radius 6.0 Å exceeds"),
        ({"pairs": {"Cu-Au": [-1, 2]}}, "model.repulsion.pairs.Cu-Au[0]: must be > 0"),
        ({"inner_scale": 0.8}, "model.repulsion: inner_scale 0.8 must be below outer_scale"),
        ({"kind": "none", "outer_scale": 0.7}, "model.repulsion: kind none (no baseline) takes"),
        ({"kind": "lj"}, "model.repulsion.kind: must be one of"),
        ({"pair": {}}, "model.repulsion: unknown field 'pair'"),
    ],
)
def test_bad_repulsion_is_a_one_line_config_error(repulsion, message) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(repulsion)
    assert message in str(err.value) and "\n" not in str(err.value)


def _campaign(tmp_path: Path, **model):
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path / "c.yaml", name="rep", **SMALL, model=model)
    store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
    return store, load_config(path), data


def _train_first(handle):
    ctx = steps.open_context(handle)
    it = ctx.store.start_iteration(ctx.campaign_id, 0)
    steps.seed_step(handle, it.id)
    steps.label_step(handle, it.id)
    out = steps.train_step(handle, it.id)
    rec = ctx.store.get_model(out.model_id)
    return ctx, rec, steps.load_model(ctx, rec)


def test_a_new_campaign_trains_with_the_baseline(tmp_path) -> None:
    from mlip_core.repulsion import WithRepulsion

    store, cfg, data = _campaign(tmp_path)
    _, rec, model = _train_first(steps.setup_campaign(store, cfg, data))
    assert isinstance(model, WithRepulsion) and rec.validation["repulsion"] == "zbl"
    assert store.get_campaign("rep").config["model"]["repulsion"]["kind"] == "zbl"


def test_a_campaign_stored_before_the_baseline_keeps_running_without_it(tmp_path) -> None:
    from mlip_core.repulsion import WithRepulsion

    store, cfg, data = _campaign(tmp_path)
    handle = steps.setup_campaign(store, cfg, data)
    rec = store.get_campaign("rep")
    old = {k: v for k, v in rec.config.items()}
    old["model"] = {k: v for k, v in old["model"].items() if k != "repulsion"}
    store.update_campaign_config(rec.id, old)  # as stored by a pesflow before the baseline
    close_stores()
    store = steps.open_store(f"sqlite:///{data / 'pesflow.sqlite'}")
    # running the same file again continues it (no conflict); resume reopens it
    assert steps.setup_campaign(store, cfg, data) == handle
    handle = steps.reopen_campaign(store, "rep", data)
    ctx, model_rec, model = _train_first(handle)
    assert ctx.cfg.model.repulsion is None
    assert not isinstance(model, WithRepulsion) and model_rec.validation["repulsion"] is None
    assert "repulsion" not in store.get_campaign("rep").config["model"], "stored as it was"
    assert RUNTIME_KEY in store.get_campaign("rep").config
    # a file that now asks for other radii is another config
    other = load_config(
        write_config(
            tmp_path / "d.yaml",
            name="rep",
            **SMALL,
            model={"repulsion": {"pairs": {"Cu-Cu": [1.2, 1.9]}}},
        )
    )
    with pytest.raises(CampaignConflictError):
        steps.setup_campaign(store, other, data)
