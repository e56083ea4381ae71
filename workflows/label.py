"""The label step: every pending label of the campaign is claimed and computed, each DFT
calculation exactly once.

A label's calculation runs in its own directory, ``<data_dir>/labels/<id>/round-<r>``. The
labeler writes its parsed outcome there (``outcome.json``) before the database is touched and,
when called again on that directory — a Prefect task retry after a database error, a resume
after ``kill -9``, another worker that claimed the label after it was requeued — returns the
stored outcome instead of running the code again (:meth:`dft_adapters.base.Labeler.label`).
The database then records the outcome and one row per DFT run (:class:`database.AttemptInput`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from . import timing
from .context import CampaignFailedError, CampaignHandle, Context, open_context
from .engine import Engine, InProcess
from .progress import reporter

__all__ = [
    "LabelResult",
    "check_failure_rate",
    "label_one",
    "label_step",
    "prepare_resume",
]

log = logging.getLogger(__name__)


def _db_failure_kind(kind: str) -> tuple[str, str]:
    from database.models import FAILURE_KINDS

    return (kind, "") if kind in FAILURE_KINDS else ("other", f"[{kind}] ")


def _attempt_rows(ctx: Context, outcome: Any, requested: dict[str, Any]) -> list:
    """One :class:`database.AttemptInput` per DFT run of ``outcome``: the settings it ran with
    (requested settings with the retry policy's changes), paths relative to the data dir."""
    from database import AttemptInput

    rows = []
    for a in outcome.attempts:
        rows.append(
            AttemptInput(
                attempt=a.index,
                status=a.status,
                message=a.message or None,
                wall_time=a.wall_time,
                settings={**requested, **a.settings_changes},
                settings_changes=dict(a.settings_changes),
                workdir=ctx.relative(a.workdir) if a.workdir else None,
                host=outcome.host or None,
            )
        )
    return rows


def label_one(handle: CampaignHandle, label_id: int, worker: str | None = None) -> str:
    """Compute one claimed label and store its result or typed failure (see module docstring).

    Returns the label's new status (``done`` / ``failed``). A label that is no longer
    ``pending``/``running`` is left alone; one that another worker has claimed meanwhile
    (``worker`` given and different) is left to it. Database errors propagate (the outcome stays
    on disk, so whoever retries does not recompute)."""
    from database import LabelStateError

    ctx = open_context(handle)
    store = ctx.store
    rec = store.get_label(label_id)
    if rec.status not in ("running", "pending"):
        return rec.status
    atoms = store.get_atoms([rec.structure_id])[0]
    workdir = ctx.label_dir(label_id, rec.retry_round)
    with timing.compute("label"):
        outcome = ctx.labeler.label(atoms, workdir=workdir)
    requested = dict(ctx.labeler.settings.to_dict())
    attempts = _attempt_rows(ctx, outcome, requested)
    try:
        if outcome.ok:
            store.store_result(
                label_id,
                energy=outcome.energy,
                forces=outcome.forces,
                stress=outcome.stress,
                wall_time=outcome.wall_time,
                host=outcome.host,
                worker=worker,
                attempts=attempts,
                code_version=outcome.code_version,
                effective_settings=outcome.settings,
                effective_settings_hash=outcome.effective_settings_hash or None,
            )
            status = "done"
        else:
            kind, prefix = _db_failure_kind(str(outcome.kind))
            store.store_failure(
                label_id,
                kind=kind,
                message=prefix + outcome.message,
                wall_time=outcome.wall_time,
                host=outcome.host or None,
                worker=worker,
                attempts=attempts,
                code_version=outcome.code_version,
            )
            status = "failed"
    except LabelStateError as exc:  # requeued and claimed by another worker: theirs now
        log.warning("label %s: %s", label_id, exc)
        return store.get_label(label_id).status
    reporter().advance("label")
    return status


@dataclass(frozen=True)
class LabelResult:
    """What the label step computed: labels finished ``done`` / ``failed`` by this call (labels
    of other runs or reused outcomes are not counted) and whether nothing is left pending."""

    done: int
    failed: int
    complete: bool


def label_step(
    handle: CampaignHandle,
    iteration_id: int,
    engine: Engine | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LabelResult:
    """Claim and compute every pending label of the campaign, ``engine.label_slots`` at a time,
    each through ``engine.submit(label_one, ...)`` (default: in this process); then check the
    iteration's failure rate (:func:`check_failure_rate`).

    A label is claimed and submitted as soon as a slot frees, so one slow calculation holds only
    its own slot. When a label's future raises, or ``should_stop()`` turns true (a pause), no new
    labels are claimed; the ones in flight are awaited (their results are stored) and the first
    error is raised — with where the computed outcomes are kept.

    Raises:
        CampaignFailedError: more than ``labeler.max_failure_rate`` of the iteration's labels
            failed (the iteration is marked failed).
        DatabaseUnavailableError: the database went away (the outcomes computed are kept).
    """
    from database import DatabaseUnavailableError

    ctx = open_context(handle)
    it = ctx.store.get_iteration_by_id(iteration_id)
    engine = engine or InProcess()
    t0 = time.perf_counter()
    try:
        counts, finished = _label_loop(ctx, it, engine, should_stop)
        while finished and _wait_for_others(ctx, should_stop):
            more, finished = _label_loop(ctx, it, engine, should_stop)
            counts = {k: counts.get(k, 0) + more.get(k, 0) for k in {*counts, *more}}
        ctx.store.record_step_time(it.id, "label", time.perf_counter() - t0, complete=finished)
    except DatabaseUnavailableError as error:
        raise DatabaseUnavailableError(
            f"{error} — the DFT outcomes already computed are kept in "
            f"{ctx.data_dir / 'labels'} and are stored, not recomputed, by `pesflow resume`",
            cause=error.cause,
            where=error.where,
        ) from error
    check_failure_rate(ctx, it)
    return LabelResult(counts.get("done", 0), counts.get("failed", 0), finished)


WAIT_POLL_S = 2.0


def _wait_for_others(ctx: Context, should_stop: Callable[[], bool] | None) -> bool:
    """After our own claims: labels this campaign selected can still be ``running`` — claimed
    by a run that died (requeued here), by our own claim whose commit was retried (requeued),
    or computed right now by another campaign's live run that selected the same structure
    (waited for: its outcome is this label). Returns True when there is work to claim again,
    False when nothing is left running (or ``should_stop``)."""
    store, worker = ctx.store, ctx.worker_id
    told = False
    while True:
        if store.requeue_stranded(ctx.campaign_id, worker=worker):
            return True
        running = store.running_selected_labels(ctx.campaign_id)
        if not running or (should_stop is not None and should_stop()):
            return False
        if not told:
            holders = sorted({str(lb.worker) for lb in running})
            reporter().message(
                f"waiting for {len(running)} label(s) being computed by another campaign's run "
                f"({', '.join(holders)})"
            )
            told = True
        time.sleep(WAIT_POLL_S)


def _label_loop(
    ctx: Context,
    it,
    engine: Engine,
    should_stop: Callable[[], bool] | None,
) -> tuple[dict[str, int], bool]:
    """The claim/submit/await loop of :func:`label_step`: (counts, all pending done)."""
    store = ctx.store
    worker = ctx.worker_id
    pending = store.count_labels(ctx.campaign_id)["pending"]
    reporter().start("label", pending, f"iteration {it.index}: labelling")
    counts = {"done": 0, "failed": 0}
    in_flight: set[Future[str]] = set()
    error: BaseException | None = None
    exhausted = stopped = False
    while True:
        free = engine.label_slots - len(in_flight)
        if not stopped and should_stop is not None and should_stop():
            stopped = True
        if error is None and not exhausted and not stopped and free > 0:
            try:
                claimed = store.claim_labels(
                    limit=free,
                    labeler=ctx.labeler_name,
                    settings_hash=ctx.settings_hash,
                    campaign=ctx.campaign_id,
                    worker=worker,
                )
            except Exception as exc:  # raised after the in-flight ones
                error, claimed = exc, []
            exhausted = len(claimed) < free
            for t in claimed:
                try:
                    in_flight.add(engine.submit(label_one, ctx.handle, t.label_id, worker))
                except Exception as exc:  # raised after the in-flight ones
                    error = error or exc
        if not in_flight:
            break
        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        for fut in done:
            try:
                status = fut.result()
            except Exception as exc:  # raised after the in-flight ones
                error = error or exc
                continue
            counts[status] = counts.get(status, 0) + 1
    reporter().finish("label")
    if error is not None:
        raise error
    return counts, exhausted and not stopped


def check_failure_rate(ctx: Context, it) -> None:
    """Raise :class:`CampaignFailedError` (the iteration marked failed) when more than
    ``labeler.max_failure_rate`` of the iteration's finished labels failed. In on-the-fly mode
    an iteration labels one frame, so the rate is over all the campaign's labels so far."""
    otf = ctx.cfg.exploration.mode == "on-the-fly"
    labs = ctx.store.list_labels(ctx.campaign_id, iteration_id=None if otf else it.id, limit=None)
    failed = [lb for lb in labs if lb.status == "failed"]
    finished = [lb for lb in labs if lb.status in ("done", "failed")]
    if not finished:
        return
    rate = len(failed) / len(finished)
    if rate > ctx.cfg.labeler.max_failure_rate:
        kinds: dict[str, int] = {}
        for lb in failed:
            kinds[lb.failure_kind] = kinds.get(lb.failure_kind, 0) + 1
        retryable = sum(n for k, n in kinds.items() if k not in NOT_FIXED_BY_RERUN)
        hint = (
            f"`pesflow resume --retry-failed` retries the {retryable} a rerun can fix"
            if retryable
            else "a rerun cannot fix invalid input or an output layout this pesflow cannot "
            "read: correct the labeler settings or structures, or upgrade pesflow"
        )
        msg = (
            f"iteration {it.index}: {len(failed)}/{len(finished)} labels"
            f"{' of the campaign so far' if otf else ''} failed "
            f"({rate:.0%} > max_failure_rate {ctx.cfg.labeler.max_failure_rate:.0%}); "
            f"kinds: {', '.join(f'{k}={n}' for k, n in sorted(kinds.items()))}; "
            f"first: {failed[0].failure_message}; {hint}"
        )
        ctx.store.update_iteration(it.id, status="failed")
        raise CampaignFailedError(" ".join(msg.split()))


NOT_FIXED_BY_RERUN = frozenset({"invalid_input", "unparsable_output"})
"""Failure kinds a rerun of the same code on the same input cannot fix."""


def prepare_resume(ctx: Context, *, retry_failed: bool = False) -> dict[str, int]:
    """Before a (re)start, with the lease held: labels left ``running`` by a dead holder go
    back to ``pending`` (their directories keep any finished outcome, so nothing is computed
    twice); with ``retry_failed``, failed labels that a rerun can fix (not ``invalid_input``)
    get a new round; selections without a label get one. Returns the counts, including
    ``kept_failed`` (failed labels left alone)."""
    store = ctx.store
    requeued = store.requeue_running(ctx.campaign_id)
    retried = store.requeue_failed(ctx.campaign_id) if retry_failed else 0
    kept = store.count_labels(ctx.campaign_id)["failed"]
    if retry_failed and kept:
        reporter().message(
            f"{kept} failed label(s) not retried: invalid input fails the same way again"
        )
    missing = _reconcile_labels(ctx)
    return {
        "requeued_running": requeued,
        "requeued_failed": retried,
        "kept_failed": kept if retry_failed else 0,
        "requested": missing,
    }


def _reconcile_labels(ctx: Context) -> int:
    """Request a label for every structure the campaign selected but has no label for."""
    store = ctx.store
    selected = {s.structure_id: s.iteration_id for s in store.list_selections(ctx.campaign_id)}
    labelled = {lb.structure_id for lb in store.list_labels(ctx.campaign_id, limit=None)}
    missing = [sid for sid in selected if sid not in labelled]
    for sid in missing:
        store.request_labels(
            ctx.campaign_id,
            [sid],
            labeler=ctx.labeler_name,
            settings_hash=ctx.settings_hash,
            settings=dict(ctx.cfg.labeler.settings),
            iteration_id=selected[sid],
        )
    return len(missing)
