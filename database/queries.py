"""Read-side queries of the dashboard and the API over campaigns and iterations (one read
transaction each, only the columns needed, no arrays loaded): campaign summaries, label counts,
the per-iteration summary, the uncertainty histogram, failures by kind.

They complement :class:`database.Store` where readers need filters, totals for paging or
aggregates over large campaigns (100k structures). Each takes the store first and returns
records (:mod:`database.read_records`); an unknown campaign raises :class:`NotFoundError`.
Listings of structures, labels and models: :mod:`database.queries_browse`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from .errors import NotFoundError
from .models import Campaign, Iteration, Label
from .read_records import CampaignSummary, HistogramData, IterationSummary
from .vocabulary import FAILURE_KINDS, LABEL_STATUSES, OTHER_FAILURE

if TYPE_CHECKING:
    from .records import CampaignRecord
    from .store import CampaignRef, Store

__all__ = [
    "RUNTIME_KEY",
    "LabelAggregate",
    "campaign_config",
    "campaign_name",
    "campaign_summary",
    "failures_by_kind",
    "histogram",
    "iteration_summaries",
    "label_aggregate",
    "label_totals",
    "list_campaigns",
    "regime_errors",
    "summary_rows",
    "trust_window",
]

RUNTIME_KEY = "_runtime"
"""Key of the workflow's runtime bookkeeping inside a stored campaign config."""

LabelAggregate = dict[tuple[int | None, str, str | None], int]
"""Label counts of one campaign by (iteration id, status, failure kind)."""


def campaign_row(s: Any, campaign_id: int) -> Campaign:
    """The campaign ORM row in session ``s`` or :class:`NotFoundError` (for the queries of
    this package only)."""
    c = s.get(Campaign, campaign_id)
    if c is None:
        raise NotFoundError(f"unknown campaign id {campaign_id}")
    return c


def label_aggregate(store: Store, campaign_id: int) -> LabelAggregate:
    """One GROUP BY over the campaign's labels; feeds the campaign totals, the failures by
    kind (:func:`failures_by_kind`) and any per-iteration count."""
    q = (
        select(Label.iteration_id, Label.status, Label.failure_kind, func.count())
        .where(Label.campaign_id == campaign_id)
        .group_by(Label.iteration_id, Label.status, Label.failure_kind)
    )
    with store.session(write=False) as s:
        return {(it, st, kind): n for it, st, kind, n in s.execute(q)}


def label_totals(agg: LabelAggregate) -> dict[str, int]:
    """Label counts by status (every status present, 0 when none) from an aggregate."""
    out = dict.fromkeys(LABEL_STATUSES, 0)
    for (_, status, _), n in agg.items():
        out[status] = out.get(status, 0) + n
    return out


def _label_counts(s: Any, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {cid: dict.fromkeys(LABEL_STATUSES, 0) for cid in campaign_ids}
    if not campaign_ids:
        return out
    q = (
        select(Label.campaign_id, Label.status, func.count())
        .where(Label.campaign_id.in_(campaign_ids))
        .group_by(Label.campaign_id, Label.status)
    )
    for cid, status, n in s.execute(q):
        out[cid][status] = n
    return out


def _n_iterations(s: Any, campaign_ids: list[int]) -> dict[int, int]:
    if not campaign_ids:
        return {}
    q = (
        select(Iteration.campaign_id, func.count())
        .where(Iteration.campaign_id.in_(campaign_ids))
        .group_by(Iteration.campaign_id)
    )
    return dict(s.execute(q).all())


def _summary(c: CampaignRecord, n_it: int, labels: dict[str, int]) -> CampaignSummary:
    lease = c.lease if c.lease is not None and c.lease.alive else None
    return CampaignSummary(
        id=c.id,
        name=c.name,
        status=c.status,
        status_message=c.status_message,
        held_by=lease.holder if lease is not None else None,
        created_at=c.created_at,
        updated_at=c.updated_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        n_iterations=n_it,
        labels=labels,
        config=dict(c.config or {}),
    )


def list_campaigns(store: Store) -> list[CampaignSummary]:
    """All campaigns, oldest first, with iteration and label counts (effective status:
    ``interrupted`` when its process died; ``held_by`` names who runs it)."""
    records = store.list_campaigns()
    ids = [c.id for c in records]
    with store.session(write=False) as s:
        labels, n_it = _label_counts(s, ids), _n_iterations(s, ids)
    return [_summary(c, n_it.get(c.id, 0), labels[c.id]) for c in records]


def campaign_summary(
    store: Store, campaign: CampaignRef | CampaignRecord, agg: LabelAggregate | None = None
) -> CampaignSummary:
    """One campaign (by id or name, or a record as it was read, e.g. the one a status change
    returned) with its counts; label counts from ``agg`` when given (see
    :func:`label_aggregate`)."""
    c = store.get_campaign(campaign) if isinstance(campaign, int | str) else campaign
    with store.session(write=False) as s:
        labels = _label_counts(s, [c.id])[c.id] if agg is None else label_totals(agg)
        n_it = _n_iterations(s, [c.id]).get(c.id, 0)
    return _summary(c, n_it, labels)


def campaign_name(store: Store, campaign_id: int) -> str:
    """The campaign's name (:class:`NotFoundError` if absent)."""
    with store.session(write=False) as s:
        name = s.scalar(select(Campaign.name).where(Campaign.id == campaign_id))
    if name is None:
        raise NotFoundError(f"unknown campaign id {campaign_id}")
    return name


def campaign_config(store: Store, campaign_id: int) -> dict[str, Any]:
    """The stored config snapshot (with runtime keys)."""
    with store.session(write=False) as s:
        return dict(campaign_row(s, campaign_id).config or {})


# --------------------------------------------------------------------------- iterations
def iteration_summaries(store: Store, campaign: CampaignRef) -> list[IterationSummary]:
    """The per-iteration summary of a campaign, oldest first (see
    :meth:`database.Store.iteration_summaries`, where it is computed)."""
    return store.iteration_summaries(campaign)


def summary_rows(store: Store, campaign: CampaignRef) -> list[dict[str, Any]]:
    """The per-iteration summary as table rows (:meth:`IterationSummary.as_row`: labels
    new/total/failed, fractions, walkers cut/failed, validation errors in meV/Å and meV/atom,
    epochs, timings in s) and ``val_regimes``, the model's validation errors per regime
    (:func:`regime_errors`)."""
    return [
        {**m.as_row(), "val_regimes": regime_errors(m.validation)}
        for m in store.iteration_summaries(campaign)
    ]


def regime_errors(validation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A model's validation errors per regime for display: ``{regime: {"n_frames",
    "force_rmse_meV", "force_mae_meV", "force_max_meV" (meV/Å), "energy_rmse_meV",
    "energy_max_meV" (meV/atom), "stress_rmse_gpa" (GPa, None without stress labels)}}``
    (empty for a model trained before per-regime metrics), with the uncertainty calibration:
    ``bound_scale`` (the 90 % bound is this times the committee deviation, the regime's own or
    the pooled one) and ``covered`` / ``covered_n`` (share of the frames labelled after this
    model's predecessor whose error its bound covered, ``workflows.calibrate``)."""
    out: dict[str, dict[str, Any]] = {}
    cal = validation.get("calibration") or {}
    pooled = (cal.get("pooled") or {}).get("scale")
    own = {k: (v or {}).get("scale") for k, v in (cal.get("by_regime") or {}).items()}
    cover = validation.get("calibration_coverage") or {}
    for name, m in (validation.get("regimes") or {}).items():
        if not isinstance(m, dict):
            continue
        milli = {k: _num(m.get(k)) for k in ("force_rmse", "force_mae", "force_max")}
        milli |= {k: _num(m.get(k)) for k in ("energy_rmse", "energy_max")}
        out[str(name)] = {
            "n_frames": m.get("n_frames"),
            **{f"{k}_meV": None if v is None else 1000.0 * v for k, v in milli.items()},
            "stress_rmse_gpa": _num(m.get("stress_rmse_gpa")),
            "bound_scale": _num(own.get(name, pooled)),
            "covered": _num((cover.get(name) or {}).get("covered")),
            "covered_n": (cover.get(name) or {}).get("n"),
        }
    return out


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def trust_window(config: dict[str, Any]) -> tuple[float | None, float | None]:
    """(lo, hi) of a stored campaign config's trust window (eV/Å), if configured."""
    trust = config.get("trust") or {}
    return _num(trust.get("lo")), _num(trust.get("hi"))


def histogram(
    store: Store, campaign_id: int, index: int | None = None, bins: int = 40
) -> HistogramData:
    """Uncertainty histogram of one iteration's explored frames (default: the latest with
    frames; :class:`NotFoundError` for an absent ``index``); the range covers the trust
    window and the data."""
    lo, hi = trust_window(campaign_config(store, campaign_id))
    with store.session(write=False) as s:
        q = select(Iteration.id, Iteration.index).where(Iteration.campaign_id == campaign_id)
        if index is not None:
            row = s.execute(q.where(Iteration.index == index)).one_or_none()
            if row is None:
                raise NotFoundError(f"campaign {campaign_id} has no iteration {index}")
        else:
            row = s.execute(
                q.where(Iteration.n_explored > 0).order_by(Iteration.index.desc()).limit(1)
            ).one_or_none()
    data = np.zeros(0) if row is None else store.iteration_force_deviations(row[0])
    finite = data[np.isfinite(data)]
    top = max([x for x in (hi, float(finite.max()) if finite.size else None) if x] or [1.0])
    # a range numpy can cut into ``bins`` finite bins whatever the trust window says
    upper = min(max(top * 1.05, 1e-6), 1e300)
    counts, edges = np.histogram(finite, bins=bins, range=(0.0, upper))
    return HistogramData(
        iteration_index=None if row is None else row[1],
        counts=[int(c) for c in counts],
        edges=[float(e) for e in edges],
        n_frames=int(data.size),
        trust_lo=lo,
        trust_hi=hi,
    )


def failures_by_kind(
    store: Store,
    campaign_id: int,
    iteration_ids: list[int],
    agg: LabelAggregate | None = None,
) -> dict[str, list[int]]:
    """Failed labels per iteration (aligned with ``iteration_ids``) by failure kind (the
    known kinds first, in their order; a label without a kind counts as ``other``)."""
    if agg is None:
        agg = label_aggregate(store, campaign_id)
    pos = {it: i for i, it in enumerate(iteration_ids)}
    out: dict[str, list[int]] = {}
    for (it_id, status, kind), n in agg.items():
        if status == "failed" and it_id in pos:
            out.setdefault(kind or OTHER_FAILURE, [0] * len(iteration_ids))[pos[it_id]] += n
    order = [*FAILURE_KINDS, *sorted(set(out) - set(FAILURE_KINDS))]
    return {k: out[k] for k in order if k in out}
