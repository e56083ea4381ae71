"""The campaign loop: seed, then per iteration train → explore → select → label → decide.

The database is the source of truth for where a campaign stands, so a run resumes wherever
the last one stopped: a completed step (an ``iteration_steps`` row with ``completed_at``) is
never redone, finished walkers are not rerun, ``done`` labels are never recomputed, and the last
finished iteration's decision is re-evaluated before going on (a run killed after deciding to
stop stops). The loop runs under the campaign's lease (:mod:`workflows.lease`); at every step
boundary it checks that it still holds it and whether a user paused or cancelled the campaign
(then it stops there and says so). The label step also stops claiming new DFT work on a pause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .context import Context
from .explore import explore_step
from .labelling import LabelSubmit, check_failure_rate, label_step, prepare_resume
from .pick import seed_step, select_step
from .progress import reporter
from .train import train_step, verified_model

__all__ = ["Decision", "decide", "evaluate", "run_campaign", "summary_rows"]


@dataclass(frozen=True)
class Decision:
    """Outcome of an iteration: continue, or stop with a campaign status and a reason."""

    stop: bool
    status: str  # running | converged | paused | cancelled | queued
    message: str


class _Stop(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision


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


def decide(ctx: Context, it) -> Decision:
    """Evaluate the rule and finish the iteration with its decision (one transaction)."""
    d = evaluate(ctx, it)
    ctx.store.finish_iteration(it.id, d.message)
    return d


Runner = Callable[..., Any]


def run_campaign(
    ctx: Context,
    lease: Any = None,
    *,
    train: Runner | None = None,
    walker_map: Callable[[list[int], int, int], list] | None = None,
    label_submit: LabelSubmit | None = None,
    label_slots: int = 8,
    retry_failed: bool = False,
) -> Decision:
    """Run (or resume) the campaign until it stops; returns the final :class:`Decision`
    (the caller ends the lease with its status).

    ``lease``: the :class:`workflows.lease.Lease` this run holds (checked at every boundary).
    ``train(handle, iteration_id)`` and ``walker_map(walker_indices, iteration_id, model_id)``
    default to in-process sequential calls; ``label_submit`` and ``label_slots`` are passed to
    :func:`label_step` (default: in-process)."""
    store, cid = ctx.store, ctx.campaign_id
    train = train or train_step

    def requested_stop() -> Decision | None:
        rec = store.get_campaign(cid)
        if rec.status in ("paused", "cancelled"):
            return Decision(True, rec.status, rec.status_message or rec.status)
        return None

    def boundary(where: str) -> None:
        if lease is not None:
            lease.check()
        d = requested_stop()
        if d is not None:
            raise _Stop(Decision(True, d.status, f"{d.message} (stopped {where})"))

    def stop_claiming() -> bool:  # a pause, a cancel, or the lease taken over
        return (lease is not None and lease.lost.is_set()) or requested_stop() is not None

    def labels(it) -> None:
        label_step(ctx, it, label_submit, label_slots, stop_claiming)
        check_failure_rate(ctx, it)

    try:
        prepare_resume(ctx, retry_failed=retry_failed)
        its = store.list_iterations(cid)
        done = [i for i in its if i.status == "done"]
        if done:
            last = evaluate(ctx, done[-1])
            if last.stop:
                if store.count_labels(cid)["pending"]:
                    labels(done[-1])  # e.g. --retry-failed after the last iteration
                final = store.latest_model(cid)
                if final is not None:  # the committee users export: repaired if corrupt
                    verified_model(ctx, final)
                return last
        start = done[-1].index + 1 if done else 0
        for index in range(start, ctx.cfg.convergence.max_iterations):
            boundary(f"before iteration {index}")
            it = store.start_iteration(cid, index)
            if index == 0:
                seed_step(ctx, it)
                labels(it)
                boundary("after the bootstrap labels")
            out = train(ctx.handle, it.id)
            boundary(f"after training iteration {index}")
            wmap = (
                (lambda idx, _it=it.id, _m=out["model_id"]: walker_map(idx, _it, _m))
                if walker_map
                else None
            )
            explore_step(ctx, it, out["model_id"], wmap)
            boundary(f"after exploring iteration {index}")
            select_step(ctx, it)
            labels(it)
            boundary(f"after labelling iteration {index}")
            decision = decide(ctx, it)
            reporter().iteration_done(summary_rows(store, cid)[-1])
            if decision.stop:
                return decision
        rec = store.get_campaign(cid)
        return Decision(True, rec.status, rec.status_message or "")
    except _Stop as stop:
        reporter().message(stop.decision.message)
        return stop.decision


def summary_rows(store, campaign) -> list[dict[str, Any]]:
    """Per-iteration figures for tables: labels new/total, fractions, validation errors
    (meV/Å, meV/atom), training epochs (and why training stopped), wall time per step (s)."""
    rows, total = [], 0
    for m in store.iteration_metrics(campaign):
        new = m.labels.get("done", 0)
        total += new
        n = m.n_explored
        rmse = m.validation.get("val_force_rmse")
        ermse = m.validation.get("val_energy_rmse")
        rows.append(
            {
                "iteration": m.index,
                "status": m.status,
                "labels_new": new,
                "labels_total": total,
                "labels_failed": m.labels.get("failed", 0),
                "n_explored": n,
                "accurate": m.n_accurate / n if n else None,
                "candidate": m.n_candidate / n if n else None,
                "failed": m.n_failed / n if n else None,
                "cut_walkers": m.walkers_cut,
                "failed_walkers": m.walkers_failed,
                "val_force_rmse_meV": rmse * 1000 if rmse is not None else None,
                "val_energy_rmse_meV": ermse * 1000 if ermse is not None else None,
                "epochs": m.validation.get("epochs"),
                "max_epochs": m.validation.get("max_epochs"),
                "time_capped": bool(m.validation.get("time_capped")),
                "timings": {k: round(v, 2) for k, v in m.step_timings.items()},
            }
        )
    return rows
