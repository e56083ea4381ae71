"""The one settings object of the workflow layer (environment prefix ``PESFLOW_``).

Created by :func:`get_settings` and passed in; nothing happens at import time.
:func:`configure_prefect_env` exports the Prefect settings measured to work on small machines
(see ``shared/notes/prefect.md``) and must run *before* ``import prefect``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PesflowSettings", "configure_prefect_env", "get_settings"]


class PesflowSettings(BaseSettings):
    """Where pesflow keeps its data and how it reaches the database and Prefect."""

    model_config = SettingsConfigDict(env_prefix="PESFLOW_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Data directory: SQLite database, checkpoints, Prefect home (relative to cwd).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file <data_dir>/pesflow.sqlite.",
    )
    prefect_home: Path | None = Field(
        default=None, description="PREFECT_HOME; default <data_dir>/prefect."
    )
    prefect_console_level: str = Field(
        default="WARNING", description="Console level of Prefect's own log handler."
    )
    prefect_startup_timeout_s: int = Field(
        default=90, description="Start-up timeout of the temporary local Prefect server, s."
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        from database import sqlite_url

        return sqlite_url(self.data_dir)

    def campaign_dir(self, name: str) -> Path:
        """``<data_dir>/campaigns/<name>`` (checkpoints, scratch)."""
        return self.data_dir / "campaigns" / name


def get_settings(**overrides: Any) -> PesflowSettings:
    """Settings from the environment (``PESFLOW_*``) with explicit overrides on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    settings = PesflowSettings(**clean)
    settings.data_dir = Path(settings.data_dir).expanduser().absolute()
    return settings


def configure_prefect_env(settings: PesflowSettings) -> dict[str, str]:
    """Export Prefect's settings (only those not already set) before Prefect is imported.

    Returns the variables set. The task-run recorder is disabled because it makes the
    temporary server's SQLite database lock ("database is locked" -> 503 -> client back-off).
    """
    home = settings.prefect_home or settings.data_dir / "prefect"
    wanted = {
        "PREFECT_HOME": str(Path(home).absolute()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": settings.prefect_console_level,
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(settings.prefect_startup_timeout_s),
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "mlip_core,dft_adapters,database,workflows",
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }
    done = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            done[key] = value
    if "PREFECT_HOME" in done:  # Prefect creates its home without parents: make it here
        Path(done["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return done
