"""Structures: the campaign's selected structures (filter, paging) and one structure."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from database.vocabulary import STRUCTURE_LABEL_FILTERS

from .. import views
from ..deps import DbId, ReadAccess, StoreDep
from ..errors import ERROR_RESPONSES
from ..schemas import Page, StructureDetail, StructureOut

router = APIRouter(tags=["structures"], responses=ERROR_RESPONSES, dependencies=[ReadAccess])

Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Rows to skip.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]


@router.get("/campaigns/{campaign_id}/structures", response_model=Page[StructureOut])
def list_structures(
    campaign_id: DbId,
    store: StoreDep,
    reason: Annotated[
        str | None, Query(max_length=32, description="candidate, bootstrap, validation, seed ...")
    ] = None,
    label_status: Annotated[
        Literal[STRUCTURE_LABEL_FILTERS] | None,  # type: ignore[valid-type]
        Query(),
    ] = None,
    iteration: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> Page[StructureOut]:
    """Structures the campaign selected, with their uncertainty and label status."""
    return views.list_structures(
        store,
        campaign_id,
        reason=reason,
        label_status=label_status,
        iteration=iteration,
        offset=offset,
        limit=limit,
    )


@router.get("/structures/{structure_id}", response_model=StructureDetail)
def get_structure(structure_id: DbId, store: StoreDep) -> StructureDetail:
    """One structure with coordinates (Å) and its physical state (constraints, moments...)."""
    r = store.get_structure(structure_id)
    return StructureDetail(
        id=r.id,
        formula=r.formula,
        natoms=r.natoms,
        source=r.source,
        numbers=[int(z) for z in r.numbers],
        positions=r.positions.tolist(),
        cell=r.cell.tolist(),
        pbc=[bool(b) for b in r.pbc],
        state=dict(r.state),
    )
