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

from .config_on_the_fly import STRATEGY, is_on_the_fly
from .context import CampaignHandle, Context, open_context
from .progress import reporter

__all__ = ["Decision", "accuracy", "decide_step", "evaluate", "otf_evaluate", "otf_labels"]


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
    if is_on_the_fly(ctx.cfg):
        return otf_evaluate(ctx, it)
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


def otf_labels(ctx: Context) -> int:
    """How many frames on-the-fly MD has selected for labelling so far."""
    return sum(1 for s in ctx.store.list_selections(ctx.campaign_id) if s.strategy == STRATEGY)


def otf_evaluate(ctx: Context, it) -> Decision:
    """The on-the-fly stopping rule after iteration ``it``: done (``converged``) when every
    walker has reached its last step (or stopped); ``paused`` when the label budget is spent
    or at ``max_iterations``; else go on."""
    store, cfg = ctx.store, ctx.cfg
    runs = store.list_walker_runs(it.id)
    model = store.model_of_iteration(it.id)
    _, phrase = accuracy(cfg.convergence, model.validation if model is not None else {})
    n = otf_labels(ctx)
    if runs and all((r.n_candidate == 0 and r.n_failed == 0) or r.stopped_early for r in runs):
        cut = [f"walker {r.walker}: {r.stop_reason}" for r in runs if r.stopped_early]
        return Decision(
            True,
            "converged",
            f"on-the-fly run finished at iteration {it.index} after {n} label(s), {phrase}"
            + (f"; stopped early: {'; '.join(cut)}" if cut else ""),
        )
    budget = cfg.exploration.on_the_fly.max_labels
    if budget is not None and n >= budget:
        return Decision(True, "paused", f"stopped: on-the-fly max_labels {budget} spent ({phrase})")
    total = sum(store.count_labels(ctx.campaign_id).values())
    if cfg.convergence.label_budget is not None and total >= cfg.convergence.label_budget:
        return Decision(
            True, "paused", f"stopped: label budget {cfg.convergence.label_budget} spent ({phrase})"
        )
    if it.index + 1 >= cfg.convergence.max_iterations:
        return Decision(
            True,
            "paused",
            f"stopped at max_iterations={cfg.convergence.max_iterations} (one per on-the-fly "
            f"update) before the walkers finished ({phrase})",
        )
    return Decision(False, "running", f"iteration {it.index}: on-the-fly, {n} label(s) so far")
