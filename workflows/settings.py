"""The one settings object of the workflow layer (environment prefix ``PESFLOW_``).

Created by :func:`get_settings` and passed in; nothing happens at import time.
:func:`configure_prefect_env` exports the Prefect settings measured to work on small machines
(see ``shared/notes/prefect.md``) and must run *before* ``import prefect``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    log_dir: Path | None = Field(
        default=None,
        description="Log files of the pesflow commands (one per command; see workflows.logs); "
        "default <data_dir>/logs.",
    )
    prefect_console_level: str = Field(
        default="WARNING", description="Console level of Prefect's own log handler."
    )
    prefect_startup_timeout_s: int = Field(
        default=90, description="Start-up timeout of the temporary local Prefect server, s."
    )
    threads_per_worker: int = Field(
        default=1,
        ge=1,
        description="Torch threads per worker process (set by pesflow, never read from "
        "OMP_NUM_THREADS); results are reproducible for a fixed value.",
    )
    lease_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="A campaign's lease expires this long after its holder's last heartbeat "
        "(heartbeat every quarter of it); a dead holder's campaign then reads as interrupted.",
    )

    execution_profiles: Path | None = Field(
        default=None,
        description="YAML file of the operator's execution profiles (name -> execution "
        "section: task runner, Dask cluster, labeler command/launcher/scratch and server "
        "paths); see workflows.profiles. The profile 'local' (threads, 2 workers) always exists.",
    )
    import_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories the API may read structure files from (os.pathsep-separated "
        "or a JSON list); default none: API configs give structures as content.",
    )
    max_structure_bytes: int = Field(
        default=2_000_000, ge=1, description="Largest 'content' of one structure source, bytes."
    )
    max_import_bytes: int = Field(
        default=200_000_000, ge=1, description="Largest structure file the API imports, bytes."
    )

    @field_validator("import_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return v

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        from database import sqlite_url

        return sqlite_url(self.data_dir)

    def resolved_log_dir(self) -> Path:
        """Where the commands' log files go: ``log_dir`` or ``<data_dir>/logs`` (absolute)."""
        return Path(self.log_dir or self.data_dir / "logs").expanduser().absolute()

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
