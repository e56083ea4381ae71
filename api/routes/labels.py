"""Labels: the campaign's reference calculations (filter by status, paging) and one label."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from database.vocabulary import FAILURE_KINDS, LABEL_STATUSES

from .. import views
from ..deps import DbId, ReadAccess, StoreDep
from ..errors import ERROR_RESPONSES
from ..schemas import LabelDetail, LabelOut, Page
from .structures import Limit, Offset

router = APIRouter(tags=["labels"], responses=ERROR_RESPONSES, dependencies=[ReadAccess])


@router.get("/campaigns/{campaign_id}/labels", response_model=Page[LabelOut])
def list_labels(
    campaign_id: DbId,
    store: StoreDep,
    status: Annotated[Literal[LABEL_STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
    failure_kind: Annotated[
        Literal[FAILURE_KINDS] | None,  # type: ignore[valid-type]
        Query(),
    ] = None,
    iteration: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> Page[LabelOut]:
    """Labels requested by the campaign, oldest first."""
    return views.list_labels(
        store,
        campaign_id,
        status=status,
        failure_kind=failure_kind,
        iteration=iteration,
        offset=offset,
        limit=limit,
    )


@router.get("/labels/{label_id}", response_model=LabelDetail)
def get_label(label_id: DbId, store: StoreDep) -> LabelDetail:
    """One label with forces (eV/Å) and stress (eV/Å^3, Voigt)."""
    r = store.get_label(label_id)
    return LabelDetail(
        id=r.id,
        structure_id=r.structure_id,
        iteration_id=r.iteration_id,
        labeler=r.labeler,
        status=r.status,
        energy=r.energy,
        failure_kind=r.failure_kind,
        failure_message=r.failure_message,
        attempts=r.attempts,
        wall_time=r.wall_time,
        created_at=r.created_at,
        finished_at=r.finished_at,
        forces=None if r.forces is None else r.forces.tolist(),
        stress=None if r.stress is None else r.stress.tolist(),
    )
