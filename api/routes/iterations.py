"""Iterations: per-iteration metrics and the uncertainty histogram."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .. import views
from ..deps import DbId, ReadAccess, StoreDep
from ..errors import ERROR_RESPONSES
from ..schemas import Histogram, IterationOut

router = APIRouter(
    prefix="/campaigns/{campaign_id}/iterations",
    tags=["iterations"],
    responses=ERROR_RESPONSES,
    dependencies=[ReadAccess],
)


@router.get("", response_model=list[IterationOut])
def list_iterations(campaign_id: DbId, store: StoreDep) -> list[IterationOut]:
    """Metrics of every iteration: counts, fractions, labels, validation errors, timings."""
    return views.iterations(store, campaign_id)


@router.get("/{index}", response_model=IterationOut)
def get_iteration(campaign_id: DbId, index: DbId, store: StoreDep) -> IterationOut:
    """Metrics of one iteration (by index)."""
    for it in views.iterations(store, campaign_id):
        if it.index == index:
            return it
    from database import NotFoundError

    raise NotFoundError(f"campaign {campaign_id} has no iteration {index}")


@router.get("/{index}/histogram", response_model=Histogram)
def get_histogram(
    campaign_id: DbId,
    index: DbId,
    store: StoreDep,
    bins: Annotated[int, Query(ge=1, le=500)] = 40,
) -> Histogram:
    """Histogram of the iteration's explored-frame uncertainties with the trust window."""
    return views.histogram(store, campaign_id, index, bins)
