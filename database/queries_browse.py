"""Read-side listings of the dashboard and the API: pages of a campaign's selected structures
and labels, the most uncertain structures, the campaign's models (one read transaction each,
no arrays loaded). Each returns records (:mod:`database.read_records`); an unknown campaign or
model raises :class:`NotFoundError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from .convert import as_utc
from .errors import NotFoundError
from .models import Iteration, Label, Model, Selection, Structure
from .queries import campaign_row
from .read_records import LabelRow, ModelRow, PageOf, StructureRow, UncertainRow

if TYPE_CHECKING:
    from .store import Store

__all__ = ["get_model", "list_labels", "list_models", "list_structures", "most_uncertain"]


def _latest_label_subquery(campaign_id: int) -> Any:
    return (
        select(Label.structure_id, func.max(Label.id).label("label_id"))
        .where(Label.campaign_id == campaign_id)
        .group_by(Label.structure_id)
        .subquery()
    )


def _latest_label_status(s: Any, campaign_id: int, structure_ids: list[int]) -> dict[int, str]:
    """Status of the newest label of each structure (of this campaign)."""
    if not structure_ids:
        return {}
    q = (
        select(Label.structure_id, Label.status)
        .where(Label.campaign_id == campaign_id, Label.structure_id.in_(structure_ids))
        .order_by(Label.id)
    )
    return dict(s.execute(q).all())  # later (newer) rows win


def list_structures(
    store: Store,
    campaign_id: int,
    *,
    reason: str | None,
    label_status: str | None,
    iteration: int | None,
    offset: int,
    limit: int,
) -> PageOf[StructureRow]:
    """A page of the campaign's selected structures, filtered by selection reason, label
    status of the newest label (``unlabelled``: none) and iteration index. Without a
    label-status filter the labels are looked up for the page's rows only."""
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
    items = [StructureRow(*r, label_status=status.get(r[0])) for r in rows]
    return PageOf(items=items, total=int(total or 0), offset=offset, limit=limit)


def most_uncertain(store: Store, campaign_id: int, n: int = 10) -> list[UncertainRow]:
    """The ``n`` selected structures with the largest committee uncertainty, largest first."""
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
    return [UncertainRow(*r, label_status=status.get(r[0])) for r in rows]


_LABEL_COLS = (
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


def list_labels(
    store: Store,
    campaign_id: int,
    *,
    status: str | None,
    failure_kind: str | None,
    iteration: int | None,
    offset: int,
    limit: int,
) -> PageOf[LabelRow]:
    """A page of the campaign's labels filtered by status, failure kind and iteration index
    (oldest first)."""
    q = select(*_LABEL_COLS).where(Label.campaign_id == campaign_id)
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
    items = [LabelRow(*r[:-2], created_at=as_utc(r[-2]), finished_at=as_utc(r[-1])) for r in rows]
    return PageOf(items=items, total=int(total or 0), offset=offset, limit=limit)


_MODEL_COLS = (
    Model.id,
    Model.campaign_id,
    Model.iteration_id,
    Model.member_count,
    Model.checkpoint_sha256,
    Model.checkpoint_uri,
    Model.validation,
    Model.created_at,
    Iteration.index.label("iteration_index"),
)


def _n_labels(s: Any, rows: list[Any]) -> dict[int, int]:
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


def _model_row(r: Any, n_labels: int) -> ModelRow:
    return ModelRow(
        id=r.id,
        campaign_id=r.campaign_id,
        iteration_id=r.iteration_id,
        iteration_index=r.iteration_index,
        member_count=r.member_count,
        checkpoint_sha256=r.checkpoint_sha256,
        checkpoint_uri=r.checkpoint_uri,
        n_training_labels=n_labels,
        validation=dict(r.validation or {}),
        created_at=as_utc(r.created_at),
    )


def list_models(store: Store, campaign_id: int) -> list[ModelRow]:
    """A campaign's models, oldest first (label-id arrays are not loaded)."""
    with store.session(write=False) as s:
        campaign_row(s, campaign_id)
        rows = s.execute(
            select(*_MODEL_COLS)
            .outerjoin(Iteration, Iteration.id == Model.iteration_id)
            .where(Model.campaign_id == campaign_id)
            .order_by(Model.id)
        ).all()
        n = _n_labels(s, rows)
    return [_model_row(r, n[r.id]) for r in rows]


def get_model(store: Store, model_id: int) -> ModelRow:
    """One model (:class:`NotFoundError` if absent)."""
    with store.session(write=False) as s:
        row = s.execute(
            select(*_MODEL_COLS)
            .outerjoin(Iteration, Iteration.id == Model.iteration_id)
            .where(Model.id == model_id)
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"unknown model id {model_id}")
        n = _n_labels(s, [row])
    return _model_row(row, n[row.id])
