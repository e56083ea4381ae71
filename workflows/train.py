"""The train step and committee checkpoints as the campaign uses them.

A model row records the training inputs (label ids, seed, the committee it was warm-started
from) and the checkpoint's path (relative to the data directory) and sha256. Every load checks
the sha256 before the file is used (:func:`load_model`). A checkpoint that is missing or does not
match is never used and never skipped over: that iteration's committee is trained again from
its recorded inputs (:func:`verified_model`), which — training being deterministic for a fixed
seed and thread count — reproduces it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import timing
from .context import CampaignFailedError, CampaignHandle, Context, open_context, seed_of
from .progress import reporter

__all__ = [
    "TrainResult",
    "load_model",
    "train_and_record",
    "train_step",
    "training_data",
    "verified_model",
]


def training_data(ctx: Context, label_ids: Any = None) -> tuple[list, list, list[int]]:
    """(training atoms, validation atoms, training label ids) from the database: every done
    label of the campaign's labeler settings, or exactly ``label_ids`` (a recorded training
    set); the validation structures (seeded copies and held-out explored frames) are always
    held out. Every structure carries its regime in ``info["regime"]`` (:mod:`workflows.regimes`)."""
    from database.extxyz import labelled_atoms

    from .regimes import REGIME_KEY, structure_regimes

    store = ctx.store
    val_sids = {
        s.structure_id for s in store.list_selections(ctx.campaign_id) if s.reason == "validation"
    }
    items = store.training_set(
        ctx.campaign_id, labeler=ctx.labeler_name, settings_hash=ctx.settings_hash
    )
    wanted = None if label_ids is None else {int(i) for i in label_ids}
    check_one_physics(
        items, ctx.labeler.settings.hashed_dict(), ctx.cfg.training.ignore_settings_keys
    )
    train, val, ids = [], [], []
    regimes = structure_regimes(ctx, [it.structure for it in items])
    for item, regime in zip(items, regimes, strict=True):
        atoms = labelled_atoms(item, campaign=ctx.handle.name)
        atoms.info[REGIME_KEY] = regime
        if item.structure.id in val_sids:
            val.append(atoms)
        elif wanted is None or item.label.id in wanted:
            train.append(atoms)
            ids.append(item.label.id)
    if wanted is not None and set(ids) != wanted:
        missing = sorted(wanted - set(ids))[:10]
        raise CampaignFailedError(f"recorded training labels {missing} are no longer done")
    return train, val, ids


def physics_changes(
    label: Any, requested: Mapping[str, Any], ignored: Any = ()
) -> dict[str, tuple[Any, Any]]:
    """``{key: (requested, used)}`` for the settings a retry changed in a way that changes the
    converged answer: keys of the ``requested`` (hashed) settings whose effective value
    differs, except :data:`dft_adapters.retry.CONVERGENCE_KEYS` (SCF steps, mixing), keys
    requested as ``None`` (resolved per structure by the backend) and ``ignored``."""
    from dft_adapters.retry import CONVERGENCE_KEYS

    used = label.effective_settings
    if used is None:  # imported, or stored before effective settings were kept
        return {}
    skip = CONVERGENCE_KEYS | set(ignored)
    return {
        k: (v, used[k])
        for k, v in requested.items()
        # None: chosen per structure by the backend (k-points from a spacing ...), not changed
        if k not in skip and v is not None and k in used and used[k] != v
    }


def check_one_physics(items: Any, requested: Mapping[str, Any], ignored: Any = ()) -> None:
    """Refuse (:class:`CampaignFailedError`) a training set whose labels were not all computed
    with the requested physics (:func:`physics_changes`): energies of different smearing,
    cutoffs ... are different potential-energy surfaces and are never trained together."""
    changed = [(it.label.id, physics_changes(it.label, requested, ignored)) for it in items]
    changed = [(i, c) for i, c in changed if c]
    if changed:
        first_id, diff = changed[0]
        what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CampaignFailedError(
            f"{len(changed)} of {len(items)} training labels were computed with other settings "
            f"than requested (label {first_id}: {what}); they are not trained with the rest — "
            f"list {sorted(diff)} in training.ignore_settings_keys if they do not matter"
        )


def load_model(ctx: Context, record) -> Any:
    """Load a model row's checkpoint after checking its sha256 against the database.

    Raises ``FileNotFoundError`` or :class:`mlip_core.checkpoint.CheckpointIntegrityError`
    (mismatch, truncated, unreadable); use :func:`verified_model` to repair instead."""
    from mlip_core.checkpoint import load_committee

    model, _ = load_committee(
        ctx.resolve(record.checkpoint_uri), expected_sha256=record.checkpoint_sha256
    )
    return model


def verified_model(ctx: Context, record, _depth: int = 0) -> Any:
    """The model of ``record``, retrained from its recorded inputs (label ids, seed, parent)
    first if its checkpoint is missing or corrupt; the row then points at the new file."""
    from mlip_core.checkpoint import CheckpointIntegrityError

    try:
        return load_model(ctx, record)
    except (FileNotFoundError, CheckpointIntegrityError) as exc:
        problem = " ".join(str(exc).split())
    if _depth > 50:
        raise CampaignFailedError(f"cannot rebuild model {record.id}: {problem}")
    reporter().message(f"model {record.id}: {problem}; retraining it from its recorded inputs")
    store = ctx.store
    it = store.get_iteration_by_id(record.iteration_id) if record.iteration_id else None
    parent = store.get_model(record.parent_model_id) if record.parent_model_id else None
    if record.seed is None and it is not None and ctx.cfg.training.warm_start:
        parent = _previous_model(ctx, it)  # a model recorded before its inputs were
    warm = verified_model(ctx, parent, _depth + 1) if parent is not None else None
    seed = record.seed
    if seed is None:
        seed = seed_of(ctx.cfg.seed, "train", it.index if it else 0) % (2**31)
    v = record.validation
    _, metrics, sha = _fit_and_save(
        ctx,
        warm=warm,
        seed=seed,
        checkpoint=ctx.resolve(record.checkpoint_uri),
        where=f"model {record.id}",
        label_ids=record.training_label_ids,
        iteration=it,
        max_epochs=v.get("max_epochs"),
        stop_after_epochs=v.get("epochs") if v.get("time_capped") else None,
    )
    same = sha == record.checkpoint_sha256
    metrics["rebuilt_from_inputs"] = True
    metrics["reproduced_sha256"] = same
    reporter().message(
        f"model {record.id} rebuilt: "
        + (
            "the same file, sha256 as recorded"
            if same
            else f"a different file (sha256 {sha[:12]}, recorded {record.checkpoint_sha256[:12]}:"
            " library versions, threads or the machine differ)"
        )
    )
    store.replace_checkpoint(
        record.id,
        checkpoint_uri=record.checkpoint_uri,
        checkpoint_sha256=sha,
        validation={**v, **metrics},
    )
    return load_model(ctx, store.get_model(record.id))


@dataclass(frozen=True)
class TrainResult:
    """The iteration's committee: its model row, checkpoint (relative to the data directory),
    validation errors (eV/Å, eV/atom; ``None`` without a validation set), training-set size,
    epochs run and why training stopped."""

    model_id: int
    checkpoint: str
    val_force_rmse: float | None = None
    val_energy_rmse: float | None = None
    n_train: int | None = None
    epochs: int | None = None
    stop_reason: str | None = None


def train_step(handle: CampaignHandle, iteration_id: int) -> TrainResult:
    """Train the iteration's committee on every done label so far (validation excluded),
    evaluate it on the validation set, save the checkpoint and record it. When the iteration
    already has a model, its checkpoint is verified (and rebuilt if needed) instead."""
    ctx = open_context(handle)
    store, cfg = ctx.store, ctx.cfg
    it = store.get_iteration_by_id(iteration_id)
    existing = store.model_of_iteration(iteration_id)
    if existing is not None:
        verified_model(ctx, existing)
        rec = store.get_model(existing.id)
        if "train" not in it.completed_steps:
            store.record_step_time(iteration_id, "train", 0.0, complete=True)
        return TrainResult(rec.id, rec.checkpoint_uri, **_summary(rec.validation))
    from .config_on_the_fly import update_epochs

    t0 = time.perf_counter()
    prev = _previous_model(ctx, it) if cfg.training.warm_start else None
    if prev is not None and prev.validation.get("backend", "native") != cfg.model.backend:
        prev = None  # a committee of another backend cannot be fine-tuned into this one
    path, metrics = train_and_record(
        ctx,
        warm=verified_model(ctx, prev) if prev is not None else None,
        parent_model_id=prev.id if prev is not None else None,
        seed=seed_of(cfg.seed, "train", it.index) % (2**31),
        checkpoint=ctx.models_dir / f"iter-{it.index:03d}.pt",
        iteration=it,
        max_epochs=update_epochs(cfg) if prev is not None else None,
    )
    store.record_step_time(iteration_id, "train", time.perf_counter() - t0, complete=True)
    return TrainResult(metrics["model_id"], ctx.relative(path), **_summary(metrics))


def _previous_model(ctx: Context, it):
    for prev in reversed(
        [i for i in ctx.store.list_iterations(ctx.campaign_id) if i.index < it.index]
    ):
        m = ctx.store.model_of_iteration(prev.id)
        if m is not None:
            return m
    return None


def _fit_and_save(
    ctx: Context,
    *,
    warm: Any,
    seed: int,
    checkpoint: Path,
    where: str,
    label_ids: Any = None,
    iteration: Any = None,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    stop_after_epochs: int | None = None,
    parent: Any = None,
) -> tuple[list[int], dict[str, Any], str]:
    """Train, evaluate on the validation set, calibrate and save: (label ids, metrics,
    sha256); with the ``parent`` model row (of ``warm``), its calibration is checked on the
    labels added since (:mod:`workflows.calibrate`)."""
    from mlip_core.backends import TrainRequest, get_backend, train_with_repulsion
    from mlip_core.checkpoint import save_committee
    from mlip_core.labelled import errors_by_regime, evaluate_predictions, predict_frames

    from .calibrate import coverage_on_new_labels, fit_model_calibration
    from .parity import parity_path, write_parity
    from .regimes import REGIME_KEY
    from .settings import get_settings

    cfg = ctx.cfg
    train, val, ids = training_data(ctx, label_ids)
    if not train:
        raise CampaignFailedError(
            f"{where}: no labelled training structures (every bootstrap label failed?)"
        )
    tc, mc = cfg.training, cfg.model
    tcfg = tc.settings(
        train,
        warm=warm is not None,
        seed=seed,
        max_epochs=max_epochs,
        max_time_s=max_time_s,
        stop_after_epochs=stop_after_epochs,
    )
    backend = get_backend(mc.backend)
    repulsion = mc.build_repulsion(ctx.species)  # None: no baseline (or a pre-baseline campaign)
    reporter().start("train", tcfg.max_epochs, f"{where}: training")
    with timing.compute("train"):
        result = train_with_repulsion(
            backend,
            TrainRequest(
                structures=train,
                species=ctx.species,
                n_members=mc.n_members,
                cutoff=mc.cutoff,
                options=mc.options,
                training=tcfg,
                warm=warm,
                workdir=checkpoint.with_suffix(".work"),
                callback=lambda row: reporter().advance("train"),
            ),
            repulsion,
        )
        pred = predict_frames(result.model, val) if val else None
    reporter().finish("train")
    errors = evaluate_predictions(pred) if pred is not None else {}
    val_regimes = [str(a.info[REGIME_KEY]) for a in val]
    calibration = fit_model_calibration(pred, val_regimes, where) if pred is not None else None
    coverage = None
    if parent is not None and warm is not None:
        coverage = coverage_on_new_labels(
            warm,
            parent.validation.get("calibration"),
            train,
            set(ids) - set(parent.training_label_ids),
            ids,
        )
    if pred is not None:
        write_parity(parity_path(checkpoint), pred, val_regimes)
    metrics: dict[str, Any] = {
        "val_force_rmse": errors.get("force_rmse"),
        "val_energy_rmse": errors.get("energy_rmse"),
        "val_force_mae": errors.get("force_mae"),
        "val_force_max": errors.get("force_max"),
        "val_energy_mae": errors.get("energy_mae"),
        "val_energy_max": errors.get("energy_max"),
        "val_stress_rmse_gpa": errors.get("stress_rmse_gpa"),
        "regimes": errors_by_regime(pred, val_regimes) if pred is not None else None,
        "parity_uri": ctx.relative(parity_path(checkpoint)) if pred is not None else None,
        "calibration": calibration,
        "calibration_coverage": coverage,
        "stress_weight": tcfg.stress_weight,
        "n_train": len(train),
        "n_val": len(val),
        "epochs": result.epochs,
        "max_epochs": tcfg.max_epochs,
        "time_capped": bool(getattr(result, "time_capped", False)),
        "stop_reason": result.stop_reason,
        "warm_start": warm is not None,
        "backend": mc.backend,
        "repulsion": None if repulsion is None else repulsion.to_dict()["kind"],
        "train_wall_s": result.wall_time_s,
        "threads": get_settings().threads_per_worker,
    }
    meta: dict[str, Any] = {
        "campaign": ctx.handle.name,
        "training_label_ids": ids,
        "seed": seed,
        # no wall-clock facts: a committee retrained from the same inputs has the same bytes
        "validation": {
            k: v
            for k, v in metrics.items()
            if v is not None and k not in ("train_wall_s", "stop_reason")
        },
    }
    if iteration is not None:
        meta["iteration"] = iteration.index
    sha = save_committee(result.model, checkpoint, meta, backend=mc.backend)
    return ids, metrics, sha


def train_and_record(
    ctx: Context,
    *,
    warm: Any,
    seed: int,
    checkpoint: Path,
    iteration: Any = None,
    parent_model_id: int | None = None,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train a committee on every done label of the campaign (validation held out and
    evaluated), save the checkpoint and record the model row with its training inputs (of
    ``iteration``, or of no iteration for an on-demand retrain). Shared by :func:`train_step`
    and the API's retrain. Returns ``(checkpoint path, metrics)``."""
    where = f"iteration {iteration.index}" if iteration is not None else "retrain"
    parent = ctx.store.get_model(parent_model_id) if parent_model_id is not None else None
    ids, metrics, sha = _fit_and_save(
        ctx,
        parent=parent,
        warm=warm,
        seed=seed,
        checkpoint=checkpoint,
        where=where,
        iteration=iteration,
        max_epochs=max_epochs,
        max_time_s=max_time_s,
    )
    metrics.update(extra or {})
    rec = ctx.store.record_model(
        ctx.campaign_id,
        member_count=ctx.cfg.model.n_members,
        checkpoint_uri=ctx.relative(checkpoint),
        checkpoint_sha256=sha,
        training_label_ids=ids,
        iteration_id=iteration.id if iteration is not None else None,
        validation=metrics,
        seed=seed,
        parent_model_id=parent_model_id,
    )
    metrics["model_id"] = rec.id
    return checkpoint, metrics


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("val_force_rmse", "val_energy_rmse", "n_train", "epochs", "stop_reason")
    return {k: metrics.get(k) for k in keys}
