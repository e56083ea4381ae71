"""The decide step: the convergence rule, a pure function of the database.

Converged when the accurate fraction of explored frames is at least ``accurate_ratio`` for
``patience`` consecutive iterations (and, if set, the validation force RMSE is below
``val_force_rmse``: agreement alone is not accuracy); otherwise stop at ``max_iterations`` or
when the label budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .context import CampaignHandle, Context, open_context
from .progress import reporter

__all__ = ["Decision", "decide_step", "evaluate"]


@dataclass(frozen=True)
class Decision:
    """Outcome of an iteration: continue, or stop with a campaign status and a reason."""

    stop: bool
    status: str  # running | converged | paused | cancelled | queued
    message: str

    def as_dict(self) -> dict[str, Any]:
        """Plain form (a flow's return value)."""
        return {"stop": self.stop, "status": self.status, "message": self.message}


def evaluate(ctx: Context, it) -> Decision:
    """The convergence rule after iteration ``it`` (a pure function of the database):
    converged when the accurate fraction >= ``accurate_ratio`` for ``patience`` consecutive
    iterations (and the validation force RMSE is below ``val_force_rmse`` if set); otherwise
    stop at ``max_iterations`` or when the label budget is spent."""
    store, conv = ctx.store, ctx.cfg.convergence
    metrics = [m for m in store.iteration_metrics(ctx.campaign_id) if m.index <= it.index]
    ratios = [(m.n_accurate / m.n_explored) if m.n_explored else 0.0 for m in metrics]
    recent = ratios[-conv.patience :]
    rmse = metrics[-1].validation.get("val_force_rmse") if metrics else None
    ok_ratio = len(recent) == conv.patience and min(recent) >= conv.accurate_ratio
    ok_rmse = conv.val_force_rmse is None or (rmse is not None and rmse <= conv.val_force_rmse)
    n_labels = store.count_labels(ctx.campaign_id)
    if ok_ratio and ok_rmse:
        return Decision(
            True,
            "converged",
            f"converged at iteration {it.index}: accurate fraction "
            f"{', '.join(f'{r:.3f}' for r in recent)} >= {conv.accurate_ratio} for "
            f"{conv.patience} iteration(s)"
            + (f", validation force RMSE {rmse * 1000:.1f} meV/Å" if rmse else ""),
        )
    if it.index + 1 >= conv.max_iterations:
        return Decision(
            True, "paused", f"stopped at max_iterations={conv.max_iterations} without convergence"
        )
    if conv.label_budget is not None and sum(n_labels.values()) >= conv.label_budget:
        return Decision(
            True, "paused", f"stopped: label budget {conv.label_budget} spent without convergence"
        )
    return Decision(
        False,
        "running",
        f"iteration {it.index}: accurate fraction {ratios[-1]:.3f} < {conv.accurate_ratio}",
    )


def decide_step(handle: CampaignHandle, iteration_id: int) -> Decision:
    """Evaluate the rule and finish the iteration with its decision (one transaction); the
    iteration's summary row goes to the progress reporter."""
    from database.queries import summary_rows

    ctx = open_context(handle)
    it = ctx.store.get_iteration_by_id(iteration_id)
    d = evaluate(ctx, it)
    ctx.store.finish_iteration(it.id, d.message)
    reporter().iteration_done(summary_rows(ctx.store, ctx.campaign_id)[-1])
    return d
