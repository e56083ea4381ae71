"""Retrain: train a new committee on every current ``done`` label of a campaign (validation
structures held out and evaluated), save the checkpoint and record the model row.

The plain step; its Prefect flows are :func:`workflows.deployed.retrain_flow` (an opened
campaign: the API's own flow runs, see :func:`workflows.service.retrain`) and
:func:`workflows.deployed.retrain_campaign` (by campaign id or name, reopened from the
``PESFLOW_*`` environment: the ``pesflow-retrain-campaign/api`` deployment).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from .context import CampaignHandle, open_context
from .train import train_and_record, verified_model

__all__ = ["NO_RETRAIN", "retrain"]

NO_RETRAIN = ("cancelled",)
"""Campaign statuses in which a retrain does not start (a cancelled campaign is over)."""


def retrain(
    handle: CampaignHandle,
    *,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and record a new committee of the campaign (warm-started from its latest model
    when the config says so). ``max_epochs`` / ``max_time_s`` (s) override the campaign's
    training settings for this retrain; ``extra`` goes into the model's validation record.

    Returns ``{"model_id", "n_train", "n_val", "val_force_rmse" (eV/Å or None), "wall_s",
    "message"}``, or ``{"status", "message"}`` without training when the campaign is in a
    :data:`NO_RETRAIN` status (cancelled after the retrain was accepted)."""
    t0 = time.perf_counter()
    ctx = open_context(handle)
    status = ctx.store.get_campaign(handle.campaign_id).status
    if status in NO_RETRAIN:
        return {"status": status, "message": f"not started: the campaign is {status}"}
    prev = ctx.store.latest_model(handle.campaign_id) if ctx.cfg.training.warm_start else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    _, metrics = train_and_record(
        ctx,
        warm=verified_model(ctx, prev) if prev is not None else None,
        parent_model_id=prev.id if prev is not None else None,
        seed=int(time.time()) % (2**31),
        checkpoint=ctx.models_dir / f"retrain-{stamp}.pt",
        max_epochs=max_epochs,
        max_time_s=max_time_s,
        extra={"trigger": "api-retrain", **(extra or {})},
    )
    rmse = metrics["val_force_rmse"]
    return {
        "model_id": metrics["model_id"],
        "n_train": metrics["n_train"],
        "n_val": metrics["n_val"],
        "val_force_rmse": rmse,
        "wall_s": time.perf_counter() - t0,
        "message": f"model {metrics['model_id']} trained on {metrics['n_train']} labels"
        + (f", validation force RMSE {rmse * 1000:.1f} meV/Å" if rmse is not None else ""),
    }
