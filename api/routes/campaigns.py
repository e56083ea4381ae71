"""Campaigns: create from a config, list, show, pause, resume, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Body, status

from .. import queries
from ..deps import DbId, ReadAccess, RunnerDep, SettingsDep, StoreDep, TokenDep
from ..errors import ERROR_RESPONSES
from ..runner import ConflictError
from ..schemas import CampaignCreate, CampaignDetail, CampaignOut, RunOut, StatusChange
from .actions import Force, submit_campaign_run

router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[CampaignOut], dependencies=[ReadAccess])
def list_campaigns(store: StoreDep) -> list[CampaignOut]:
    """All campaigns with their status, iteration count and label counts."""
    return queries.list_campaigns(store)


@router.post("", response_model=CampaignDetail, status_code=status.HTTP_201_CREATED)
def create_campaign(
    body: CampaignCreate, store: StoreDep, settings: SettingsDep, token: TokenDep
) -> CampaignDetail:
    """Create a campaign from a config (validated like `pesflow validate`). It does not start:
    POST `/campaigns/{id}/resume` runs it."""
    from workflows.config import ConfigError, parse_config
    from workflows.steps import setup_campaign

    try:
        cfg = parse_config(body.config, source="config", base_dir=settings.data_dir)
    except ConfigError:
        raise
    except Exception as exc:  # a config the validator's error formatting trips over
        raise ConfigError(f"invalid campaign config ({type(exc).__name__}: {exc})") from exc
    if any(c.name == cfg.name for c in store.list_campaigns()):
        raise ConflictError(f"campaign {cfg.name!r} already exists")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = setup_campaign(store, cfg, settings.data_dir)
    return queries.get_campaign(store, handle.campaign_id)


@router.get("/{campaign_id}", response_model=CampaignDetail, dependencies=[ReadAccess])
def get_campaign(campaign_id: DbId, store: StoreDep) -> CampaignDetail:
    """One campaign with its config snapshot."""
    return queries.get_campaign(store, campaign_id)


def _set_status(store, campaign_id: int, new: str, allowed: tuple[str, ...], message: str | None):
    current = queries.get_campaign(store, campaign_id)
    if current.status not in allowed:
        raise ConflictError(
            f"campaign {current.name!r} is {current.status}; cannot change it to {new}"
        )
    store.set_campaign_status(campaign_id, new, message)
    return queries.get_campaign(store, campaign_id)


@router.post("/{campaign_id}/pause", response_model=CampaignDetail)
def pause_campaign(
    campaign_id: DbId, store: StoreDep, token: TokenDep, body: StatusChange | None = Body(None)
) -> CampaignDetail:
    """Mark the campaign paused (a running flow stops at its next iteration boundary)."""
    msg = (body.message if body else None) or f"paused via API by {token.name}"
    return _set_status(store, campaign_id, "paused", ("created", "running", "paused"), msg)


@router.post("/{campaign_id}/cancel", response_model=CampaignDetail)
def cancel_campaign(
    campaign_id: DbId, store: StoreDep, token: TokenDep, body: StatusChange | None = Body(None)
) -> CampaignDetail:
    """Cancel the campaign for good (it cannot be resumed)."""
    msg = (body.message if body else None) or f"cancelled via API by {token.name}"
    allowed = ("created", "running", "paused", "failed", "cancelled")
    return _set_status(store, campaign_id, "cancelled", allowed, msg)


@router.post("/{campaign_id}/resume", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED)
def resume_campaign(
    campaign_id: DbId,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    token: TokenDep,
    force: Force = False,
) -> RunOut:
    """Start or continue the campaign flow; answers 202 with the run id (see `/runs/{id}`)."""
    return submit_campaign_run(store, settings, runner, campaign_id, force)
