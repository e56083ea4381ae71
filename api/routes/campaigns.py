"""Campaigns: create from a config, list, show, pause, resume, cancel."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Body, HTTPException, status

from workflows import service

from .. import views
from ..deps import (
    AdminToken,
    DbId,
    OperateToken,
    ReadAccess,
    RunnerDep,
    SettingsDep,
    StoreDep,
    scope_extra,
)
from ..errors import ERROR_RESPONSES
from ..runner import ConflictError
from ..schemas import CampaignCreate, CampaignDetail, CampaignOut, RunOut, StatusChange
from ..validation import OneLineErrorsRoute
from .actions import submit_campaign_run

router = APIRouter(
    prefix="/campaigns",
    tags=["campaigns"],
    responses=ERROR_RESPONSES,
    route_class=OneLineErrorsRoute,  # a rejected config: one line naming the key
)
log = logging.getLogger(__name__)


@router.get("", response_model=list[CampaignOut], dependencies=[ReadAccess])
def list_campaigns(store: StoreDep) -> list[CampaignOut]:
    """All campaigns with their status, iteration count and label counts."""
    return views.list_campaigns(store)


@router.post(
    "",
    response_model=CampaignDetail,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=scope_extra("admin"),
)
def create_campaign(
    body: CampaignCreate, store: StoreDep, settings: SettingsDep, token: AdminToken
) -> CampaignDetail:
    """Create a campaign from a campaign author's config (the science; `execution` names an
    operator's profile). Structures come as `content` (extxyz, xyz, CIF, POSCAR text), are
    generated, or are `file`s from the operator's import directories. It does not start:
    POST `/campaigns/{id}/resume` runs it."""
    try:
        campaign_id = service.create_campaign(store, body.config, settings)
    except service.ProfilesError as exc:  # the operator's file, not the client's config
        log.error("execution profiles: %s", exc)
        raise HTTPException(503, "the server's execution profiles are invalid") from None
    return views.get_campaign(store, campaign_id)


@router.get("/{campaign_id}", response_model=CampaignDetail, dependencies=[ReadAccess])
def get_campaign(campaign_id: DbId, store: StoreDep) -> CampaignDetail:
    """One campaign with its config snapshot."""
    return views.get_campaign(store, campaign_id)


def _set_status(store, campaign_id: int, new: str, allowed: tuple[str, ...], message: str | None):
    """Atomic compare-and-set through the campaign's transition table; 409 with both statuses
    when the current one does not allow it (e.g. pausing a cancelled campaign)."""
    from database import StatusConflictError

    try:
        rec = store.transition_campaign(campaign_id, new, message, allowed_from=allowed)
    except StatusConflictError as exc:
        raise ConflictError(str(exc)) from exc
    return views.campaign_detail(store, rec)  # what this change did, not a later change


@router.post(
    "/{campaign_id}/pause", response_model=CampaignDetail, openapi_extra=scope_extra("operate")
)
def pause_campaign(
    campaign_id: DbId, store: StoreDep, token: OperateToken, body: StatusChange | None = Body(None)
) -> CampaignDetail:
    """Pause the campaign: a running flow stops at its next step boundary (DFT calculations in
    flight finish and are stored); a queued run does not start."""
    msg = (body.message if body else None) or "paused via API"  # no token name: public
    allowed = ("created", "queued", "running", "paused", "interrupted")
    out = _set_status(store, campaign_id, "paused", allowed, msg)
    log.info("campaign %s paused via API by token %r", campaign_id, token.name)  # done, not asked
    return out


@router.post(
    "/{campaign_id}/cancel", response_model=CampaignDetail, openapi_extra=scope_extra("admin")
)
def cancel_campaign(
    campaign_id: DbId, store: StoreDep, token: AdminToken, body: StatusChange | None = Body(None)
) -> CampaignDetail:
    """Cancel the campaign for good (it cannot be resumed; a later pause is refused)."""
    msg = (body.message if body else None) or "cancelled via API"  # no token name: public
    allowed = ("created", "queued", "running", "paused", "interrupted", "failed")
    out = _set_status(store, campaign_id, "cancelled", allowed, msg)
    log.info("campaign %s cancelled via API by token %r", campaign_id, token.name)
    return out


@router.post(
    "/{campaign_id}/resume",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=scope_extra("operate"),
)
def resume_campaign(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    token: OperateToken,
) -> RunOut:
    """Start or continue the campaign flow; answers 202 with the run id (see `/runs/{id}`),
    409 while another process holds the campaign (naming it). An interrupted campaign (its
    process died) resumes like a paused one."""
    return submit_campaign_run(store, settings, runner, campaign_id, token.name)
