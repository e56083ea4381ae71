"""One arm with one seed: a whole campaign through the product's own loop, then scored.

The campaign runs in-process (:func:`workflows.steps.run_campaign`, no Prefect server) on a
fresh SQLite store in a temporary data directory. Everything the benchmark reports about the
campaign is read back from that store afterwards: the committee of each iteration (model rows,
their checkpoints loaded with :func:`mlip_core.checkpoint.load_committee`) and the
per-iteration summaries (:meth:`database.Store.iteration_summaries`).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from workflows.config import CampaignConfig, parse_config

from .config import BenchConfig
from .testset import evaluate

__all__ = ["run_arm"]


def _run_campaign(cfg: CampaignConfig, data_dir: Path) -> tuple[list[Any], list[Any], str]:
    """Run ``cfg`` to its end in ``data_dir``; returns (models oldest first with their
    checkpoints loaded, iteration metrics, the final decision's message)."""
    from mlip_core.checkpoint import load_committee
    from workflows.steps import close_stores, open_context, open_store, run_campaign, setup_campaign

    store = open_store(f"sqlite:///{data_dir / 'pesflow.sqlite'}")
    try:
        handle = setup_campaign(store, cfg, data_dir)
        ctx = open_context(handle)
        decision = run_campaign(ctx)
        metrics = store.iteration_summaries(handle.campaign_id)
        models = []
        for rec in sorted(store.list_models(handle.campaign_id), key=lambda m: m.id):
            path = Path(rec.checkpoint_uri)
            path = path if path.is_absolute() else data_dir / path
            model, _ = load_committee(path, expected_sha256=rec.checkpoint_sha256)
            models.append((rec, model))
        return models, metrics, decision.message
    finally:
        close_stores()


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    """One arm with one seed (picklable in and out, for a process pool).

    ``job`` holds ``bench`` and ``campaign`` (the arm's campaign, JSON dumps), ``arm``,
    ``seed``, ``test`` and ``validation`` (oracle-labelled ``ase.Atoms``) and ``out_dir``.

    Returns ``curve`` (one point per committee the campaign trained: ``n_labels`` = its
    training labels, test ``force_rmse`` eV/Å and ``energy_rmse`` eV/atom overall and
    ``per_regime``, ``spearman`` of max deviation vs max error, ``val_force_rmse`` of the
    product's own validation set, then what the campaign did with that committee:
    ``n_explored``, ``n_candidate``, ``n_failed`` frames, ``n_cut`` / ``n_failed_walkers``,
    ``n_picked`` and ``n_new_labels`` (done; at iteration 0 the bootstrap and validation
    structures too), ``train_s`` / ``explore_s`` / ``label_s`` seconds, ``elapsed_s``: campaign seconds until
    this committee was trained, the seed step excepted),
    ``oracle_calls`` (labels the campaign requested, done or failed: bootstrap, validation
    and every iteration's picks), ``oracle_calls_unused`` (those of the last iteration, which
    the product labels before it stops and never trains on), ``md_steps`` (committee MD steps
    the walkers were configured to run: what oracle-driven MD of the same length would have
    cost in oracle calls; cut walkers ran fewer; on-the-fly walkers run their steps once over
    the campaign, and fewer when it stops first), the final committee's per-frame deviations
    and errors on the test and validation sets, its calibration, ``checkpoint`` (the final
    committee with the calibration, under ``out_dir/models``), property checks when
    ``bench.properties``, ``decision`` and ``wall_s``.
    """
    import torch

    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.calibration import fit_calibration
    from mlip_core.checkpoint import save_committee
    from mlip_core.uncertainty import spearman

    torch.set_num_threads(1)  # small tensors, shared machine: one thread is fastest
    bench = BenchConfig.model_validate(job["bench"])
    cfg = parse_config(job["campaign"], source=f"arm {job['arm']!r}", check_files=False)
    arm, seed, test, val = job["arm"], int(job["seed"]), job["test"], job["validation"]
    t_arm = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"pesflow-al-{arm}-{seed}-") as tmp:
        models, metrics, message = _run_campaign(cfg, Path(tmp))
    campaign_s = time.perf_counter() - t_arm
    by_index = {m.index: m for m in metrics}
    index_of = {m.iteration_id: m.index for m in metrics}
    curve: list[dict[str, Any]] = []
    for rec, model in models:
        ev = evaluate(model, test)
        rho = spearman(ev["max_dev"], ev["max_err"])
        it = by_index.get(index_of.get(rec.iteration_id, -1))
        point: dict[str, Any] = {
            "iteration": None if it is None else it.index,
            "n_labels": len(rec.training_label_ids),
            "force_rmse": ev["force_rmse"],
            "energy_rmse": ev["energy_rmse"],
            "per_regime": ev["per_regime"],
            "spearman": None if math.isnan(rho) else rho,
            "val_force_rmse": rec.validation.get("val_force_rmse"),
        }
        if it is not None:
            # labels requested before this committee was trained: the seed step's, then every
            # earlier iteration's (the train step runs before the iteration's own picks)
            point["oracle_calls"] = (
                cfg.bootstrap.n_structures + cfg.validation.n_structures
                if it.index == 0
                else sum(
                    m.labels.get("done", 0) + m.labels.get("failed", 0)
                    for m in metrics
                    if m.index < it.index
                )
            )
            # campaign wall seconds until this committee existed: every earlier iteration's
            # steps plus this one's training (the seed step's labelling not counted)
            point["elapsed_s"] = sum(
                sum(m.step_timings.values()) for m in metrics if m.index < it.index
            ) + it.step_timings.get("train", 0.0)
            point.update(
                n_explored=it.n_explored,
                n_candidate=it.n_candidate,
                n_failed=it.n_failed,
                n_cut=it.walkers_cut,
                n_failed_walkers=it.walkers_failed,
                n_picked=it.n_selected,
                n_new_labels=it.labels.get("done", 0),
                train_s=it.step_timings.get("train"),
                explore_s=it.step_timings.get("explore"),
                label_s=it.step_timings.get("label"),
            )
        curve.append(point)
    final = models[-1][1]
    final_test, final_val = evaluate(final, test), evaluate(final, val)
    cal = fit_calibration(final_val["max_dev"], final_val["max_err"], "scale")
    last = metrics[-1] if metrics else None
    steps_per_iteration = sum(w.steps * w.count for w in cfg.exploration.walkers)
    explored = sum(1 for m in metrics if m.n_explored or m.walkers)
    if cfg.exploration.mode == "on-the-fly":  # one long MD per walker over the campaign
        explored = min(explored, 1)
    out: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "oracle_calls": sum(m.labels.get("done", 0) + m.labels.get("failed", 0) for m in metrics),
        "oracle_calls_unused": 0
        if last is None
        else last.labels.get("done", 0) + last.labels.get("failed", 0),
        "md_steps": steps_per_iteration * explored,
        "decision": message,
        "campaign_s": campaign_s,
        "test_max_dev": final_test["max_dev"],
        "test_max_err": final_test["max_err"],
        "test_regime": final_test["regime"],
        "val_max_dev": final_val["max_dev"],
        "val_max_err": final_val["max_err"],
        "val_regime": final_val["regime"],
        "calibration": cal.to_dict(),
    }
    ckpt = Path(job["out_dir"]) / "models" / f"{arm}-seed{seed}.pt"
    save_committee(
        final,
        ckpt,
        {
            "benchmark": bench.name,
            "arm": arm,
            "seed": seed,
            "n_labels": curve[-1]["n_labels"],
            "calibration": cal.to_dict(),
        },
        backend=cfg.model.backend,
    )
    out["checkpoint"] = str(ckpt)
    if bench.properties:
        from benchmarks.al_efficiency.properties import property_checks

        m = bench.material
        t2 = time.perf_counter()
        out["properties"] = property_checks(
            CommitteeCalculator(final, min_distance=0.0), m.element, m.crystal, m.lattice_constant
        )
        out["properties_s"] = time.perf_counter() - t2
    out["wall_s"] = time.perf_counter() - t_arm
    return out
