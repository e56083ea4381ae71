"""Campaigns, iterations (with their step rows) and per-iteration dashboard metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from .convert import (
    CampaignRef,
    _iteration,
)
from .errors import (
    DatabaseInputError,
    DuplicateError,
    NotFoundError,
)
from .models import (
    CAMPAIGN_STATUSES,
    ITERATION_STATUSES,
    ITERATION_STEPS,
    LABEL_STATUSES,
    Campaign,
    Iteration,
    IterationDrop,
    IterationStep,
    Label,
    Model,
    Selection,
    WalkerRun,
    utcnow,
)
from .read_records import IterationSummary
from .records import CampaignRecord, IterationRecord
from .repo_lifecycle import LifecycleRepo
from .validation import (
    check_choice,
    check_energy,
    check_json,
    check_nonempty,
)


class CampaignsRepo(LifecycleRepo):
    """Campaigns, iterations and per-iteration dashboard metrics."""

    # ------------------------------------------------------------------ campaigns
    def create_campaign(
        self,
        name: str,
        config: dict[str, Any] | None = None,
        *,
        status: str = "created",
        exist_ok: bool = False,
    ) -> CampaignRecord:
        """Create a campaign with a config snapshot. ``exist_ok`` returns an existing one
        (resume); otherwise an existing name raises :class:`DuplicateError`. A new campaign is
        ``created`` (or ``paused`` / ``queued``; it becomes running only with its lease)."""
        check_nonempty(name, "campaign name")
        config = check_json(config or {}, "campaign config")
        check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        if status not in ("created", "paused", "queued"):
            raise DatabaseInputError(f"a new campaign cannot be {status}")
        with self.session() as s:
            existing = s.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()
            if existing is not None:
                if exist_ok:
                    return self._record(s, existing)
                raise DuplicateError(f"campaign {name!r} already exists")
            c = Campaign(name=name, config=config, status=status)
            s.add(c)
            s.flush()
            return self._record(s, c)

    def get_campaign(self, campaign: CampaignRef) -> CampaignRecord:
        """A campaign by id or name (effective status, lease); :class:`UnknownCampaignError`
        if absent."""
        with self.session(write=False) as s:
            return self._record(s, self._campaign_row(s, campaign))

    def list_campaigns(self) -> list[CampaignRecord]:
        """All campaigns, oldest first."""
        with self.session(write=False) as s:
            return [self._record(s, c) for c in s.scalars(select(Campaign).order_by(Campaign.id))]

    def update_campaign_config(
        self, campaign: CampaignRef, config: dict[str, Any]
    ) -> CampaignRecord:
        """Replace the config snapshot."""
        config = check_json(config, "campaign config")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            c.config = config
            c.updated_at = utcnow()
            s.flush()
            return self._record(s, c)

    # ------------------------------------------------------------------ iterations
    @staticmethod
    def _with_steps(s: Session, its: Sequence[Iteration]) -> list[IterationRecord]:
        steps: dict[int, list[IterationStep]] = {it.id: [] for it in its}
        if steps:
            q = select(IterationStep).where(IterationStep.iteration_id.in_(list(steps)))
            for st in s.scalars(q):
                steps[st.iteration_id].append(st)
        return [_iteration(it, steps[it.id]) for it in its]

    def start_iteration(self, campaign: CampaignRef, index: int | None = None) -> IterationRecord:
        """Get or create iteration ``index`` (default: one after the latest) and mark it
        ``running``. Idempotent: calling it again for the same index returns the same row."""
        if index is not None and (not isinstance(index, int) or index < 0):
            raise DatabaseInputError(f"iteration index must be an int >= 0, got {index!r}")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            if index is None:
                last = s.scalar(
                    select(func.max(Iteration.index)).where(Iteration.campaign_id == c.id)
                )
                index = 0 if last is None else last + 1
            it = s.scalars(
                select(Iteration).where(Iteration.campaign_id == c.id, Iteration.index == index)
            ).one_or_none()
            if it is None:
                it = Iteration(campaign_id=c.id, index=index, status="running")
                s.add(it)
            elif it.status == "created":
                it.status = "running"
            if it.started_at is None:
                it.started_at = utcnow()
            s.flush()
            return self._with_steps(s, [it])[0]

    def get_iteration(self, campaign: CampaignRef, index: int) -> IterationRecord:
        """Iteration ``index`` of a campaign; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            it = s.scalars(
                select(Iteration).where(Iteration.campaign_id == c.id, Iteration.index == index)
            ).one_or_none()
            if it is None:
                raise NotFoundError(f"campaign {c.name!r} has no iteration {index}")
            return self._with_steps(s, [it])[0]

    def get_iteration_by_id(self, iteration_id: int) -> IterationRecord:
        """An iteration by database id; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            return self._with_steps(s, [self._iteration_row(s, iteration_id)])[0]

    def latest_iteration(self, campaign: CampaignRef) -> IterationRecord | None:
        """The iteration with the highest index, or ``None``."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            it = s.scalars(
                select(Iteration)
                .where(Iteration.campaign_id == c.id)
                .order_by(Iteration.index.desc())
                .limit(1)
            ).one_or_none()
            return None if it is None else self._with_steps(s, [it])[0]

    def list_iterations(self, campaign: CampaignRef) -> list[IterationRecord]:
        """All iterations of a campaign by index."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            rows = s.scalars(
                select(Iteration).where(Iteration.campaign_id == c.id).order_by(Iteration.index)
            )
            return self._with_steps(s, list(rows))

    def record_step_time(
        self, iteration_id: int, step: str, seconds: float, *, complete: bool = False
    ) -> IterationRecord:
        """Add ``seconds`` of wall time to ``step`` of the iteration (one atomic upsert of the
        step row, so concurrent writers add up) and, with ``complete``, mark the step done."""
        check_choice(step, ITERATION_STEPS, "iteration step")
        seconds = check_energy(seconds, f"time of step {step!r}")
        if seconds < 0:
            raise DatabaseInputError(f"time of step {step!r} is negative ({seconds})")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            self._add_step(s, it.id, step, seconds, complete)
            return self._with_steps(s, [it])[0]

    def update_iteration(
        self,
        iteration_id: int,
        *,
        status: str | None = None,
        n_explored: int | None = None,
        n_accurate: int | None = None,
        n_candidate: int | None = None,
        n_failed: int | None = None,
        complete_step: str | None = None,
        step_seconds: float = 0.0,
    ) -> IterationRecord:
        """Set counts and/or the status (``done``/``failed`` set ``finished_at``); with
        ``complete_step``, mark that step completed (adding ``step_seconds``) in the same
        transaction."""
        if status is not None:
            check_choice(status, ITERATION_STATUSES, "iteration status")
        if complete_step is not None:
            check_choice(complete_step, ITERATION_STEPS, "iteration step")
        counts = {
            "n_explored": n_explored,
            "n_accurate": n_accurate,
            "n_candidate": n_candidate,
            "n_failed": n_failed,
        }
        for key, value in counts.items():
            if value is not None and (not isinstance(value, int | np.integer) or value < 0):
                raise DatabaseInputError(f"{key} must be an int >= 0, got {value!r}")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            for key, value in counts.items():
                if value is not None:
                    setattr(it, key, int(value))
            if status is not None:
                it.status = status
                if status in ("done", "failed"):
                    it.finished_at = utcnow()
            if complete_step is not None:
                self._add_step(s, it.id, complete_step, float(step_seconds), True)
            s.flush()
            return self._with_steps(s, [it])[0]

    def finish_iteration(
        self,
        iteration_id: int,
        decision: str,
        *,
        seconds: float = 0.0,
    ) -> IterationRecord:
        """The decide step, atomically: the iteration becomes ``done`` with its decision and
        the ``decide`` step is completed. (The campaign's own status changes with the lease:
        :meth:`release_lease`.)"""
        check_nonempty(decision, "decision")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            it.status = "done"
            it.decision = decision
            it.finished_at = utcnow()
            self._add_step(s, it.id, "decide", float(seconds), True)
            s.flush()
            return self._with_steps(s, [it])[0]

    def force_deviation_histogram(
        self,
        iteration_id: int,
        bins: int | Sequence[float] = 50,
        range: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Histogram (counts, edges) of the max force deviations (eV/Å) of every frame the
        iteration's walkers recorded (non-finite ones left out)."""
        data = self.iteration_force_deviations(iteration_id)
        return np.histogram(data, bins=bins, range=range)

    def iteration_force_deviations(self, iteration_id: int) -> np.ndarray:
        """Finite max force deviations (float64, eV/Å) of every frame the iteration's walkers
        recorded, walker by walker."""
        with self.session(write=False) as s:
            self._iteration_row(s, iteration_id)
            arrays = [
                a
                for a in s.scalars(
                    select(WalkerRun.max_force_devs)
                    .where(WalkerRun.iteration_id == iteration_id)
                    .order_by(WalkerRun.walker)
                )
                if a is not None
            ]
        data = np.concatenate(arrays) if arrays else np.zeros(0)
        return data[np.isfinite(data)]

    def iteration_summaries(self, campaign: CampaignRef) -> list[IterationSummary]:
        """The per-iteration summary of a campaign, oldest first (one read transaction):
        counts, fractions, timings, the iteration model's validation metrics, walkers cut /
        failed, selections, labels by status (and done labels so far), the frames each
        filter dropped by reason. :class:`NotFoundError` for an unknown campaign."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            its = self._with_steps(
                s,
                list(
                    s.scalars(
                        select(Iteration)
                        .where(Iteration.campaign_id == c.id)
                        .order_by(Iteration.index)
                    )
                ),
            )
            sel = dict(
                s.execute(
                    select(Selection.iteration_id, func.count())
                    .where(Selection.campaign_id == c.id)
                    .group_by(Selection.iteration_id)
                ).all()
            )
            lab: dict[int, dict[str, int]] = {}
            for it_id, status, n in s.execute(
                select(Label.iteration_id, Label.status, func.count())
                .where(Label.campaign_id == c.id)
                .group_by(Label.iteration_id, Label.status)
            ):
                lab.setdefault(it_id, {})[status] = n
            models = dict(
                s.execute(
                    select(Model.iteration_id, Model.validation).where(
                        Model.campaign_id == c.id, Model.iteration_id.is_not(None)
                    )
                ).all()
            )
            dropped: dict[int, dict[str, int]] = {}
            for it_id, reason, n in s.execute(
                select(IterationDrop.iteration_id, IterationDrop.reason, IterationDrop.count)
                .join(Iteration, Iteration.id == IterationDrop.iteration_id)
                .where(Iteration.campaign_id == c.id)
                .order_by(IterationDrop.id)
            ):
                d = dropped.setdefault(it_id, {})
                d[reason] = d.get(reason, 0) + n
            walkers = {
                row[0]: row[1:]
                for row in s.execute(
                    select(
                        WalkerRun.iteration_id,
                        func.count(),
                        func.sum(case((WalkerRun.stopped_early, 1), else_=0)),
                        func.sum(case((WalkerRun.status == "failed", 1), else_=0)),
                    )
                    .join(Iteration, Iteration.id == WalkerRun.iteration_id)
                    .where(Iteration.campaign_id == c.id)
                    .group_by(WalkerRun.iteration_id)
                )
            }
        out = []
        total = 0
        for it in its:
            n = it.n_explored
            w = walkers.get(it.id, (0, 0, 0))
            labels = {st: lab.get(it.id, {}).get(st, 0) for st in LABEL_STATUSES}
            total += labels.get("done", 0)
            out.append(
                IterationSummary(
                    iteration_id=it.id,
                    index=it.index,
                    status=it.status,
                    started_at=it.started_at,
                    finished_at=it.finished_at,
                    step_timings=dict(it.step_timings),
                    n_explored=n,
                    n_accurate=it.n_accurate,
                    n_candidate=it.n_candidate,
                    n_failed=it.n_failed,
                    accurate_fraction=it.n_accurate / n if n else None,
                    candidate_fraction=it.n_candidate / n if n else None,
                    validation=dict(models.get(it.id) or {}),
                    n_selected=sel.get(it.id, 0),
                    labels=labels,
                    labels_total=total,
                    decision=it.decision,
                    walkers=int(w[0] or 0),
                    walkers_cut=int(w[1] or 0),
                    walkers_failed=int(w[2] or 0),
                    dropped=dropped.get(it.id, {}),
                )
            )
        return out

    iteration_metrics = iteration_summaries  # former name
