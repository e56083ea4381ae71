"""Campaigns, iterations and per-iteration dashboard metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select

from .convert import (
    CampaignRef,
    _campaign,
    _iteration,
    as_utc,
)
from .errors import (
    DatabaseInputError,
    DuplicateError,
    NotFoundError,
)
from .models import (
    CAMPAIGN_STATUSES,
    ITERATION_STATUSES,
    LABEL_STATUSES,
    Campaign,
    Iteration,
    Label,
    Selection,
    utcnow,
)
from .records import (
    CampaignRecord,
    IterationMetrics,
    IterationRecord,
)
from .store_base import StoreBase
from .validation import (
    check_choice,
    check_energy,
    check_json,
    check_nonempty,
)

_TERMINAL_CAMPAIGN = ("cancelled", "converged", "failed")


class CampaignsRepo(StoreBase):
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
        (resume); otherwise an existing name raises :class:`DuplicateError`."""
        check_nonempty(name, "campaign name")
        config = check_json(config or {}, "campaign config")
        check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        with self.session() as s:
            existing = s.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()
            if existing is not None:
                if exist_ok:
                    return _campaign(existing)
                raise DuplicateError(f"campaign {name!r} already exists")
            c = Campaign(name=name, config=config, status=status)
            if status == "running":
                c.started_at = utcnow()
            s.add(c)
            s.flush()
            return _campaign(c)

    def get_campaign(self, campaign: CampaignRef) -> CampaignRecord:
        """A campaign by id or name; :class:`UnknownCampaignError` if absent."""
        with self.session(write=False) as s:
            return _campaign(self._campaign_row(s, campaign))

    def list_campaigns(self) -> list[CampaignRecord]:
        """All campaigns, oldest first."""
        with self.session(write=False) as s:
            return [_campaign(c) for c in s.scalars(select(Campaign).order_by(Campaign.id))]

    def set_campaign_status(
        self, campaign: CampaignRef, status: str, message: str | None = None
    ) -> CampaignRecord:
        """Change the status (created/running/paused/cancelled/converged/failed); sets
        ``started_at`` on the first ``running`` and ``finished_at`` on a terminal status."""
        check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            c.status = status
            c.status_message = message
            now = utcnow()
            c.updated_at = now
            if status == "running" and c.started_at is None:
                c.started_at = now
            c.finished_at = now if status in _TERMINAL_CAMPAIGN else None
            s.flush()
            return _campaign(c)

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
            return _campaign(c)

    # ------------------------------------------------------------------ iterations
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
                it = Iteration(
                    campaign_id=c.id, index=index, status="running", step_timings={}, validation={}
                )
                s.add(it)
            elif it.status == "created":
                it.status = "running"
            if it.started_at is None:
                it.started_at = utcnow()
            s.flush()
            return _iteration(it)

    def get_iteration(self, campaign: CampaignRef, index: int) -> IterationRecord:
        """Iteration ``index`` of a campaign; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            it = s.scalars(
                select(Iteration).where(Iteration.campaign_id == c.id, Iteration.index == index)
            ).one_or_none()
            if it is None:
                raise NotFoundError(f"campaign {c.name!r} has no iteration {index}")
            return _iteration(it)

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
            return None if it is None else _iteration(it)

    def list_iterations(self, campaign: CampaignRef) -> list[IterationRecord]:
        """All iterations of a campaign by index."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            rows = s.scalars(
                select(Iteration).where(Iteration.campaign_id == c.id).order_by(Iteration.index)
            )
            return [_iteration(it) for it in rows]

    def record_step_time(self, iteration_id: int, step: str, seconds: float) -> IterationRecord:
        """Add ``seconds`` of wall time to ``step`` (train/explore/select/label/...)."""
        check_nonempty(step, "step name")
        seconds = check_energy(seconds, f"time of step {step!r}")
        if seconds < 0:
            raise DatabaseInputError(f"time of step {step!r} is negative ({seconds})")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            timings = dict(it.step_timings or {})
            timings[step] = timings.get(step, 0.0) + seconds
            it.step_timings = timings
            s.flush()
            return _iteration(it)

    def update_iteration(
        self,
        iteration_id: int,
        *,
        status: str | None = None,
        n_explored: int | None = None,
        n_accurate: int | None = None,
        n_candidate: int | None = None,
        n_failed: int | None = None,
        validation: dict[str, Any] | None = None,
        max_force_devs: np.ndarray | Sequence[float] | None = None,
    ) -> IterationRecord:
        """Set counts, validation errors (merged into the stored dict), the explored frames'
        max force deviations (float64 array, eV/Å) and/or the status (``done``/``failed``
        set ``finished_at``)."""
        if status is not None:
            check_choice(status, ITERATION_STATUSES, "iteration status")
        counts = {
            "n_explored": n_explored,
            "n_accurate": n_accurate,
            "n_candidate": n_candidate,
            "n_failed": n_failed,
        }
        for key, value in counts.items():
            if value is not None and (not isinstance(value, int | np.integer) or value < 0):
                raise DatabaseInputError(f"{key} must be an int >= 0, got {value!r}")
        if validation is not None:
            validation = check_json(validation, "validation metrics")
        if max_force_devs is not None:
            max_force_devs = np.asarray(max_force_devs, dtype=np.float64)
            if max_force_devs.ndim != 1:
                raise DatabaseInputError(
                    f"max_force_devs must be 1-D, got shape {max_force_devs.shape}"
                )
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            for key, value in counts.items():
                if value is not None:
                    setattr(it, key, int(value))
            if validation is not None:
                it.validation = {**(it.validation or {}), **validation}
            if max_force_devs is not None:
                it.max_force_devs = max_force_devs
            if status is not None:
                it.status = status
                if status in ("done", "failed"):
                    it.finished_at = utcnow()
            s.flush()
            return _iteration(it)

    def force_deviation_histogram(
        self,
        iteration_id: int,
        bins: int | Sequence[float] = 50,
        range: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Histogram (counts, edges) of an iteration's stored max force deviations."""
        with self.session(write=False) as s:
            it = self._iteration_row(s, iteration_id)
            data = it.max_force_devs if it.max_force_devs is not None else np.zeros(0)
        return np.histogram(data, bins=bins, range=range)

    def iteration_metrics(self, campaign: CampaignRef) -> list[IterationMetrics]:
        """Per-iteration figures for the dashboard (counts, fractions, timings, validation,
        selections and labels by status)."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            its = list(
                s.scalars(
                    select(Iteration).where(Iteration.campaign_id == c.id).order_by(Iteration.index)
                )
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
        out = []
        for it in its:
            n = it.n_explored
            out.append(
                IterationMetrics(
                    iteration_id=it.id,
                    index=it.index,
                    status=it.status,
                    started_at=as_utc(it.started_at),
                    finished_at=as_utc(it.finished_at),
                    step_timings=dict(it.step_timings or {}),
                    n_explored=n,
                    n_accurate=it.n_accurate,
                    n_candidate=it.n_candidate,
                    n_failed=it.n_failed,
                    accurate_fraction=it.n_accurate / n if n else None,
                    candidate_fraction=it.n_candidate / n if n else None,
                    validation=dict(it.validation or {}),
                    n_selected=sel.get(it.id, 0),
                    labels={st: lab.get(it.id, {}).get(st, 0) for st in LABEL_STATUSES},
                )
            )
        return out
