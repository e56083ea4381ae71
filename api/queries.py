"""Read-side queries of the API and dashboard (one transaction each, only the columns needed).

They complement :class:`database.Store` where the API needs filters, totals for paging, or
aggregates over large campaigns (100k structures) without loading arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select

from database import NotFoundError, Store
from database.convert import as_utc
from database.models import (
    FAILURE_KINDS,
    LABEL_STATUSES,
    Campaign,
    Iteration,
    Label,
    Model,
    Selection,
    Structure,
)
from workflows.config import public_snapshot

from . import schemas

RUNTIME_KEY = "_runtime"


def campaign_row(s, campaign_id: int) -> Campaign:
    """The campaign row or :class:`NotFoundError`."""
    c = s.get(Campaign, campaign_id)
    if c is None:
        raise NotFoundError(f"unknown campaign id {campaign_id}")
    return c


LabelAggregate = dict[tuple[int | None, str, str | None], int]
"""Label counts of one campaign by (iteration id, status, failure kind)."""


def label_aggregate(store: Store, campaign_id: int) -> LabelAggregate:
    """One GROUP BY over the campaign's labels; feeds the campaign totals, the per-iteration
    counts and the failures by kind (the dashboard needs all three)."""
    q = (
        select(Label.iteration_id, Label.status, Label.failure_kind, func.count())
        .where(Label.campaign_id == campaign_id)
        .group_by(Label.iteration_id, Label.status, Label.failure_kind)
    )
    with store.session(write=False) as s:
        return {(it, st, kind): n for it, st, kind, n in s.execute(q)}


def label_totals(agg: LabelAggregate) -> dict[str, int]:
    out = dict.fromkeys(LABEL_STATUSES, 0)
    for (_, status, _), n in agg.items():
        out[status] = out.get(status, 0) + n
    return out


def _label_counts(s, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
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


def _n_iterations(s, campaign_ids: list[int]) -> dict[int, int]:
    if not campaign_ids:
        return {}
    q = (
        select(Iteration.campaign_id, func.count())
        .where(Iteration.campaign_id.in_(campaign_ids))
        .group_by(Iteration.campaign_id)
    )
    return dict(s.execute(q).all())


def _campaign_out(c, n_it: int, labels: dict[str, int]) -> dict[str, Any]:
    """``c``: a :class:`database.CampaignRecord` (effective status: ``interrupted`` when its
    process died; the lease names who runs it)."""
    lease = c.lease if c.lease is not None and c.lease.alive else None
    return {
        "id": c.id,
        "name": c.name,
        "status": c.status,
        "status_message": c.status_message,
        "held_by": lease.holder if lease is not None else None,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "started_at": c.started_at,
        "finished_at": c.finished_at,
        "n_iterations": n_it,
        "labels": labels,
    }


def list_campaigns(store: Store) -> list[schemas.CampaignOut]:
    """All campaigns, oldest first, with iteration and label counts."""
    records = store.list_campaigns()
    ids = [c.id for c in records]
    with store.session(write=False) as s:
        labels, n_it = _label_counts(s, ids), _n_iterations(s, ids)
    return [
        schemas.CampaignOut(**_campaign_out(c, n_it.get(c.id, 0), labels[c.id])) for c in records
    ]


def get_campaign(
    store: Store, campaign_id: int, agg: LabelAggregate | None = None
) -> schemas.CampaignDetail:
    """One campaign with its config (without the workflow's runtime bookkeeping); label
    counts from ``agg`` when given (see :func:`label_aggregate`)."""
    return campaign_detail(store, store.get_campaign(campaign_id), agg)


def campaign_detail(
    store: Store, c: Any, agg: LabelAggregate | None = None
) -> schemas.CampaignDetail:
    """The detail view of a campaign record as it was read (e.g. the record a status change
    returned: its status is the one this change produced, not a later one)."""
    with store.session(write=False) as s:
        labels = _label_counts(s, [c.id])[c.id] if agg is None else label_totals(agg)
        n_it = _n_iterations(s, [c.id]).get(c.id, 0)
    config = {k: v for k, v in (c.config or {}).items() if k != RUNTIME_KEY}
    config = public_snapshot(config)  # no server paths or operator settings (anonymous reads)
    return schemas.CampaignDetail(**_campaign_out(c, n_it, labels), config=config)


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
def _fraction(n: int, total: int) -> float | None:
    return n / total if total else None


def iterations(
    store: Store, campaign_id: int, agg: LabelAggregate | None = None
) -> list[schemas.IterationOut]:
    """Per-iteration metrics (no arrays loaded): counts, step timings, the iteration model's
    validation errors, the decision."""
    store.get_campaign(campaign_id)
    metrics = store.iteration_metrics(campaign_id)
    if agg is None:
        agg = label_aggregate(store, campaign_id)
    lab: dict[int | None, dict[str, int]] = {}
    for (it_id, status, _), n in agg.items():
        d = lab.setdefault(it_id, {})
        d[status] = d.get(status, 0) + n
    out = []
    for m in metrics:
        n = m.n_explored
        out.append(
            schemas.IterationOut(
                iteration_id=m.iteration_id,
                index=m.index,
                status=m.status,
                started_at=m.started_at,
                finished_at=m.finished_at,
                step_timings=dict(m.step_timings),
                n_explored=n,
                n_accurate=m.n_accurate,
                n_candidate=m.n_candidate,
                n_failed=m.n_failed,
                accurate_fraction=_fraction(m.n_accurate, n),
                candidate_fraction=_fraction(m.n_candidate, n),
                failed_fraction=_fraction(m.n_failed, n),
                n_selected=m.n_selected,
                dropped=dict(m.dropped),
                labels={st: lab.get(m.iteration_id, {}).get(st, 0) for st in LABEL_STATUSES},
                val_force_rmse=_num(m.validation.get("val_force_rmse")),
                val_energy_rmse=_num(m.validation.get("val_energy_rmse")),
                decision=m.decision,
                walkers=m.walkers,
                walkers_cut=m.walkers_cut,
                walkers_failed=m.walkers_failed,
            )
        )
    return out


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and np.isfinite(x) else None


def trust_window(config: dict[str, Any]) -> tuple[float | None, float | None]:
    """(lo, hi) of the campaign's trust window (eV/Å), if configured."""
    trust = config.get("trust") or {}
    return _num(trust.get("lo")), _num(trust.get("hi"))


def histogram(
    store: Store, campaign_id: int, index: int | None = None, bins: int = 40
) -> schemas.Histogram:
    """Uncertainty histogram of one iteration's explored frames (default: the latest with
    frames); the range covers the trust window and the data."""
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
    row = None if row is None else (row[1],)
    finite = data[np.isfinite(data)]
    top = max([x for x in (hi, float(finite.max()) if finite.size else None) if x] or [1.0])
    # a range numpy can cut into ``bins`` finite bins whatever the trust window says
    upper = min(max(top * 1.05, 1e-6), 1e300)
    counts, edges = np.histogram(finite, bins=bins, range=(0.0, upper))
    return schemas.Histogram(
        iteration_index=None if row is None else row[0],
        counts=[int(c) for c in counts],
        edges=[float(e) for e in edges],
        n_frames=int(data.size),
        trust_lo=lo,
        trust_hi=hi,
    )


def failures_by_kind(
    store: Store,
    campaign_id: int,
    its: list[schemas.IterationOut],
    agg: LabelAggregate | None = None,
) -> dict[str, list[int]]:
    """Failed labels per iteration (aligned with ``its``) by failure kind."""
    if agg is None:
        agg = label_aggregate(store, campaign_id)
    pos = {it.iteration_id: i for i, it in enumerate(its)}
    out: dict[str, list[int]] = {}
    for (it_id, status, kind), n in agg.items():
        if status == "failed" and it_id in pos:
            out.setdefault(kind or "other", [0] * len(its))[pos[it_id]] += n
    order = [*FAILURE_KINDS, *sorted(set(out) - set(FAILURE_KINDS))]
    return {k: out[k] for k in order if k in out}


# --------------------------------------------------------------------------- structures
def _latest_label_subquery(campaign_id: int):
    return (
        select(Label.structure_id, func.max(Label.id).label("label_id"))
        .where(Label.campaign_id == campaign_id)
        .group_by(Label.structure_id)
        .subquery()
    )


def list_structures(
    store: Store,
    campaign_id: int,
    *,
    reason: str | None,
    label_status: str | None,
    iteration: int | None,
    offset: int,
    limit: int,
) -> schemas.Page[schemas.StructureOut]:
    """A page of the campaign's selected structures, filtered by selection reason, label
    status (of the newest label) and iteration index. Without a label-status filter the labels
    are looked up for the page's rows only."""
    q = (
        select(
            Structure.id,
            Structure.formula,
            Structure.natoms,
            Structure.source,
            Structure.walker,
            Structure.temperature,
            Structure.md_step,
            Selection.iteration_id,
            Selection.reason,
            Selection.max_force_dev,
        )
        .join(Selection, Selection.structure_id == Structure.id)
        .where(Selection.campaign_id == campaign_id)
    )
    if reason is not None:
        q = q.where(Selection.reason == reason)
    if iteration is not None:
        q = q.join(Iteration, Iteration.id == Selection.iteration_id).where(
            Iteration.index == iteration
        )
    if label_status is not None:
        latest = _latest_label_subquery(campaign_id)
        q = q.outerjoin(latest, latest.c.structure_id == Structure.id).outerjoin(
            Label, Label.id == latest.c.label_id
        )
        if label_status == "unlabelled":
            q = q.where(Label.id.is_(None))
        else:
            q = q.where(Label.status == label_status)
    with store.session(write=False) as s:
        campaign_row(s, campaign_id)
        total = s.scalar(select(func.count()).select_from(q.subquery()))
        rows = s.execute(q.order_by(Structure.id).offset(offset).limit(limit)).all()
        status = _latest_label_status(s, campaign_id, [r[0] for r in rows])
    items = [
        schemas.StructureOut(
            id=r[0],
            formula=r[1],
            natoms=r[2],
            source=r[3],
            walker=r[4],
            temperature=r[5],
            md_step=r[6],
            iteration_id=r[7],
            reason=r[8],
            max_force_dev=r[9],
            label_status=status.get(r[0]),
        )
        for r in rows
    ]
    return schemas.Page[schemas.StructureOut](items=items, total=total, offset=offset, limit=limit)


def _latest_label_status(s, campaign_id: int, structure_ids: list[int]) -> dict[int, str]:
    """Status of the newest label of each structure (of this campaign)."""
    if not structure_ids:
        return {}
    q = (
        select(Label.structure_id, Label.status)
        .where(Label.campaign_id == campaign_id, Label.structure_id.in_(structure_ids))
        .order_by(Label.id)
    )
    return dict(s.execute(q).all())  # later (newer) rows win


def most_uncertain(store: Store, campaign_id: int, n: int = 10) -> list[schemas.UncertainStructure]:
    """The ``n`` selected structures with the largest committee uncertainty."""
    top = (  # the top n of the campaign's selections first, then the joins on n rows
        select(Selection.structure_id, Selection.iteration_id, Selection.max_force_dev)
        .where(Selection.campaign_id == campaign_id, Selection.max_force_dev.is_not(None))
        .order_by(Selection.max_force_dev.desc(), Selection.structure_id)
        .limit(n)
        .subquery()
    )
    q = (
        select(
            Structure.id,
            Structure.formula,
            Structure.natoms,
            Iteration.index,
            Structure.walker,
            Structure.temperature,
            top.c.max_force_dev,
        )
        .join(top, top.c.structure_id == Structure.id)
        .outerjoin(Iteration, Iteration.id == top.c.iteration_id)
        .order_by(top.c.max_force_dev.desc(), Structure.id)
    )
    with store.session(write=False) as s:
        rows = s.execute(q).all()
        status = _latest_label_status(s, campaign_id, [r[0] for r in rows])
    return [
        schemas.UncertainStructure(
            structure_id=r[0],
            formula=r[1],
            natoms=r[2],
            iteration_index=r[3],
            walker=r[4],
            temperature=r[5],
            max_force_dev=r[6],
            label_status=status.get(r[0]),
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- labels
def list_labels(
    store: Store,
    campaign_id: int,
    *,
    status: str | None,
    failure_kind: str | None,
    iteration: int | None,
    offset: int,
    limit: int,
) -> schemas.Page[schemas.LabelOut]:
    """A page of the campaign's labels filtered by status, failure kind and iteration index."""
    cols = (
        Label.id,
        Label.structure_id,
        Label.iteration_id,
        Label.labeler,
        Label.status,
        Label.energy,
        Label.failure_kind,
        Label.failure_message,
        Label.attempts,
        Label.wall_time,
        Label.created_at,
        Label.finished_at,
    )
    q = select(*cols).where(Label.campaign_id == campaign_id)
    if status is not None:
        q = q.where(Label.status == status)
    if failure_kind is not None:
        q = q.where(Label.failure_kind == failure_kind)
    if iteration is not None:
        q = q.join(Iteration, Iteration.id == Label.iteration_id).where(
            Iteration.index == iteration
        )
    with store.session(write=False) as s:
        campaign_row(s, campaign_id)
        total = s.scalar(select(func.count()).select_from(q.subquery()))
        rows = s.execute(q.order_by(Label.id).offset(offset).limit(limit)).all()
    items = [
        schemas.LabelOut(
            **{
                c.key: getattr(r, c.key) for c in cols if c.key not in ("created_at", "finished_at")
            },
            created_at=as_utc(r.created_at),
            finished_at=as_utc(r.finished_at),
        )
        for r in rows
    ]
    return schemas.Page[schemas.LabelOut](items=items, total=total, offset=offset, limit=limit)


# --------------------------------------------------------------------------- models
_MODEL_COLS = (
    Model.id,
    Model.campaign_id,
    Model.iteration_id,
    Model.member_count,
    Model.checkpoint_sha256,
    Model.validation,
    Model.created_at,
)


def _model_out(row: Any, iteration_index: int | None, n_labels: int) -> schemas.ModelOut:
    return schemas.ModelOut(
        id=row.id,
        campaign_id=row.campaign_id,
        iteration_id=row.iteration_id,
        iteration_index=iteration_index,
        member_count=row.member_count,
        checkpoint_sha256=row.checkpoint_sha256,
        n_training_labels=n_labels,
        validation=dict(row.validation or {}),
        created_at=as_utc(row.created_at),
        download_url=f"/api/v1/models/{row.id}/checkpoint",
    )


def _n_labels(s, rows: list[Any]) -> dict[int, int]:
    """Training-set sizes: ``validation['n_train']`` when the trainer recorded it (always for
    pesflow's own models), else the length of the stored label-id array."""
    out: dict[int, int] = {}
    missing = []
    for r in rows:
        n = (r.validation or {}).get("n_train")
        if isinstance(n, int) and n >= 0:
            out[r.id] = n
        else:
            missing.append(r.id)
    if missing:
        q = select(Model.id, Model.training_label_ids).where(Model.id.in_(missing))
        out.update({i: int(np.asarray(a).size) for i, a in s.execute(q)})
    return out


def list_models(store: Store, campaign_id: int) -> list[schemas.ModelOut]:
    """A campaign's models, oldest first (label-id arrays are not loaded)."""
    with store.session(write=False) as s:
        campaign_row(s, campaign_id)
        rows = s.execute(
            select(*_MODEL_COLS, Iteration.index.label("iteration_index"))
            .outerjoin(Iteration, Iteration.id == Model.iteration_id)
            .where(Model.campaign_id == campaign_id)
            .order_by(Model.id)
        ).all()
        n = _n_labels(s, rows)
    return [_model_out(r, r.iteration_index, n[r.id]) for r in rows]


def get_model(store: Store, model_id: int) -> tuple[schemas.ModelOut, str]:
    """A model and its checkpoint path; :class:`NotFoundError` if absent."""
    with store.session(write=False) as s:
        row = s.execute(
            select(*_MODEL_COLS, Model.checkpoint_uri, Iteration.index.label("iteration_index"))
            .outerjoin(Iteration, Iteration.id == Model.iteration_id)
            .where(Model.id == model_id)
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"unknown model id {model_id}")
        n = _n_labels(s, [row])
    return _model_out(row, row.iteration_index, n[row.id]), row.checkpoint_uri
