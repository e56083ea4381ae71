"""The decide step: the convergence rule, a pure function of the database.

Converged when the accurate fraction of explored frames is at least ``accurate_ratio`` for
``patience`` consecutive iterations and, if ``val_force_rmse`` is set, the validation force
RMSE of every regime is at most that target (agreement alone is not accuracy, and one regime's
error is not hidden by another's); otherwise stop at ``max_iterations`` or when the label
budget is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .context import CampaignHandle, Context, open_context
from .progress import reporter

__all__ = ["Decision", "accuracy", "decide_step", "evaluate"]


@dataclass(frozen=True)
class Decision:
    """Outcome of an iteration: continue, or stop with a campaign status and a reason."""

    stop: bool
    status: str  # running | converged | paused | cancelled | queued
    message: str

    def as_dict(self) -> dict[str, Any]:
        """Plain form (a flow's return value)."""
        return {"stop": self.stop, "status": self.status, "message": self.message}


def accuracy(conv: Any, validation: dict[str, Any]) -> tuple[bool, str]:
    """Whether a model's validation metrics meet ``convergence.val_force_rmse`` in every
    regime, and a phrase naming the worst regime and its force RMSE (meV/Å). Without a target
    it holds; without per-regime metrics (a model trained before them) the overall RMSE
    stands for one regime; without any validation error it fails."""
    regimes = {
        str(name): m.get("force_rmse")
        for name, m in (validation.get("regimes") or {}).items()
        if isinstance(m, dict)
    }
    if not regimes and validation.get("val_force_rmse") is not None:
        regimes = {"all": validation["val_force_rmse"]}
    known = {k: float(v) for k, v in regimes.items() if v is not None and math.isfinite(v)}
    if not known:
        return conv.val_force_rmse is None, "no validation force error"
    worst = max(known, key=lambda k: known[k])
    phrase = f"validation force RMSE {known[worst] * 1000:.1f} meV/Å"
    if len(known) > 1:
        phrase = f"worst regime {worst} (of {len(known)}): {phrase}"
    elif worst != "all":
        phrase = f"regime {worst}: {phrase}"
    target = conv.val_force_rmse
    if target is None:
        return True, phrase
    ok = len(known) == len(regimes) and known[worst] <= target
    return ok, phrase + f" {'<=' if ok else '>'} {target * 1000:.1f} meV/Å"


def evaluate(ctx: Context, it) -> Decision:
    """The convergence rule after iteration ``it`` (a pure function of the database):
    converged when the accurate fraction >= ``accurate_ratio`` for ``patience`` consecutive
    iterations and (if ``val_force_rmse`` is set) every regime's validation force RMSE of the
    iteration's model is at most it (:func:`accuracy`); otherwise stop at ``max_iterations``
    or when the label budget is spent. The message names the worst regime and its error."""
    store, conv = ctx.store, ctx.cfg.convergence
    metrics = [m for m in store.iteration_metrics(ctx.campaign_id) if m.index <= it.index]
    ratios = [(m.n_accurate / m.n_explored) if m.n_explored else 0.0 for m in metrics]
    recent = ratios[-conv.patience :]
    ok_ratio = len(recent) == conv.patience and min(recent) >= conv.accurate_ratio
    ok_rmse, phrase = accuracy(conv, metrics[-1].validation if metrics else {})
    n_labels = store.count_labels(ctx.campaign_id)
    if ok_ratio and ok_rmse:
        return Decision(
            True,
            "converged",
            f"converged at iteration {it.index}: accurate fraction "
            f"{', '.join(f'{r:.3f}' for r in recent)} >= {conv.accurate_ratio} for "
            f"{conv.patience} iteration(s), {phrase}",
        )
    if it.index + 1 >= conv.max_iterations:
        return Decision(
            True,
            "paused",
            f"stopped at max_iterations={conv.max_iterations} without convergence ({phrase})",
        )
    if conv.label_budget is not None and sum(n_labels.values()) >= conv.label_budget:
        return Decision(
            True,
            "paused",
            f"stopped: label budget {conv.label_budget} spent without convergence ({phrase})",
        )
    why = (
        f"accurate fraction {ratios[-1]:.3f} < {conv.accurate_ratio}"
        if not ok_ratio
        else f"agreement holds but {phrase}"
    )
    return Decision(False, "running", f"iteration {it.index}: {why}")


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
