"""Models: a campaign's trained committees and checkpoint download."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from database import NotFoundError

from .. import views
from ..deps import DbId, ReadAccess, SettingsDep, StoreDep
from ..errors import ERROR_RESPONSES
from ..schemas import ModelOut, ParityOut

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES, dependencies=[ReadAccess])


@router.get("/campaigns/{campaign_id}/models", response_model=list[ModelOut])
def list_models(campaign_id: DbId, store: StoreDep) -> list[ModelOut]:
    """The campaign's trained committees, oldest first."""
    return views.list_models(store, campaign_id)


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: DbId, store: StoreDep) -> ModelOut:
    """One trained committee."""
    return views.get_model(store, model_id)[0]


@router.get("/models/{model_id}/parity", response_model=ParityOut)
def get_parity(model_id: DbId, store: StoreDep, settings: SettingsDep) -> ParityOut:
    """The model's committee-mean predictions against the reference labels on its validation
    set, per regime: energies per atom (eV/atom) and force components (eV/Å), for parity
    plots (404 for a model trained before they were kept)."""
    return views.model_parity(store, settings.data_dir, model_id)


@router.get(
    "/models/{model_id}/checkpoint",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "Checkpoint"}},
)
def download_checkpoint(model_id: DbId, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """The committee checkpoint (load with `mlip_core.checkpoint.load_committee`; the
    `X-Checkpoint-SHA256` header is the hash recorded when it was trained)."""
    model, stored = views.get_model(store, model_id)
    path = Path(stored) if Path(stored).is_absolute() else Path(settings.data_dir) / stored
    if not path.is_file():
        raise NotFoundError(f"checkpoint of model {model_id} is missing on the server")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"model-{model_id}.pt",
        headers={"X-Checkpoint-SHA256": model.checkpoint_sha256},
    )
