"""Settings of the API server (environment prefix ``PESFLOW_``), created by :func:`get_api_settings`:
the core settings (:class:`workflows.settings.PesflowSettings`: data directory, database,
Prefect, execution profiles, import directories) plus the API's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from workflows.settings import PesflowSettings

__all__ = ["ApiSettings", "get_api_settings"]


class ApiSettings(PesflowSettings):
    """The core settings plus how the API treats readers, browsers and flow runs."""

    model_config = SettingsConfigDict(env_prefix="PESFLOW_", extra="ignore")

    api_public_read: bool = Field(
        default=True, description="Read endpoints and dashboard need no token (false: they do)."
    )
    api_cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty: no CORS middleware."
    )
    api_deployment: str | None = Field(
        default=None,
        description="Prefect deployment ('flow/deployment') that runs campaign flows; default: "
        "the flow runs in a background thread of the API process.",
    )
    api_workers: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Background runner threads (a retrain need not wait for a campaign run).",
    )
    api_poll_seconds: float = Field(
        default=5.0, gt=0, description="Dashboard refresh interval while a campaign runs, s."
    )
    prefect_ui_url: str | None = Field(
        default=None, description="Prefect UI base URL for flow-run links (e.g. http://host:4200)."
    )
    api_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request body, bytes (413 above it, before authentication).",
    )
    api_max_upload_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest body of a campaign create (the config with its structure files).",
    )


def get_api_settings(**overrides: Any) -> ApiSettings:
    """Settings from the environment with explicit (non-None) overrides on top."""
    settings = ApiSettings(**{k: v for k, v in overrides.items() if v is not None})
    settings.data_dir = Path(settings.data_dir).expanduser().absolute()
    return settings
