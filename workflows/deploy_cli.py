"""``pesflow deploy``, ``pesflow worker`` and ``pesflow db upgrade`` (the machinery is in
:mod:`workflows.deploy`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .cli_support import CliError, console, guard
from .deploy import (
    DEFAULT_POOL,
    crash_orphaned_runs,
    db_upgrade,
    deploy_api_runs,
    deploy_campaign,
    deployment_name,
    ensure_work_pool,
    require_server,
    undeploy_campaign,
    worker_command,
)

__all__ = ["db_upgrade_cmd", "deploy_cmd", "register", "worker_cmd"]

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env PESFLOW_DATA_DIR, default ./data)."),
]
PoolOpt = Annotated[str, typer.Option("--pool", help="Prefect work pool (type process).")]


def deploy_cmd(
    config: Annotated[Path, typer.Argument(help="Campaign YAML.")],
    cron: Annotated[
        str | None, typer.Option(help='Cron schedule, e.g. "0 */6 * * *" (one-minute granularity).')
    ] = None,
    interval: Annotated[float | None, typer.Option(help="Interval schedule, s.")] = None,
    timezone: Annotated[str, typer.Option(help="Time zone of the cron schedule.")] = "UTC",
    iterations: Annotated[int, typer.Option(help="Iterations added per run.")] = 1,
    pool: PoolOpt = DEFAULT_POOL,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the deployment.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Register the campaign as a scheduled Prefect deployment (each run adds iterations to
    the stored campaign; `pesflow worker` executes the runs)."""
    from .config import load_config
    from .context import open_store
    from .settings import configure_prefect_env, get_settings
    from .setup import setup_campaign

    cfg = load_config(config)
    settings = get_settings(data_dir=data_dir)
    configure_prefect_env(settings)
    if delete:
        gone = undeploy_campaign(cfg.name)
        console.print(
            f"deployment {deployment_name(cfg.name)} {'deleted' if gone else 'did not exist'}"
        )
        return
    require_server()
    if cron is None and interval is None:
        raise CliError("give --cron or --interval", 2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.resolved_database_url())
    setup_campaign(store, cfg, settings.data_dir)
    info = deploy_campaign(
        cfg.name,
        cron=cron,
        interval=interval,
        timezone=timezone,
        iterations=iterations,
        work_pool=pool,
    )
    console.print(
        f"deployment {info.name} ({info.id}): {info.schedule}, {iterations} "
        f"iteration(s) per run, work pool {info.work_pool!r}; start a worker with: "
        f"pesflow worker --pool {info.work_pool}",
        markup=False,
        highlight=False,
    )


def worker_cmd(
    pool: PoolOpt = DEFAULT_POOL,
    limit: Annotated[int, typer.Option(help="Flow runs at a time.")] = 1,
    name: Annotated[str | None, typer.Option(help="Worker name.")] = None,
    crash_orphans: Annotated[
        bool, typer.Option(help="Mark runs left Running by a dead worker of this pool as Crashed.")
    ] = True,
    healthcheck: Annotated[
        bool,
        typer.Option(
            "--healthcheck", help="Serve /health on PREFECT_WORKER_WEBSERVER_PORT (8080)."
        ),
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the long-lived Prefect process worker that executes scheduled campaign runs."""
    from .settings import configure_prefect_env, get_settings

    settings = get_settings(data_dir=data_dir)
    os.environ.setdefault("PESFLOW_DATA_DIR", str(settings.data_dir))
    configure_prefect_env(settings)
    require_server()
    ensure_work_pool(pool)
    deploy_api_runs(pool)
    if crash_orphans:
        n = crash_orphaned_runs(pool)
        if n:
            console.print(f"marked {len(n)} orphaned flow run(s) Crashed")
    cmd = worker_command(pool, limit, name, healthcheck)
    # flow runs start `python -m prefect.engine`: this interpreter's python first on PATH
    os.environ["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)  # same pid and process group: the stack stops it cleanly


def db_upgrade_cmd(
    timeout: Annotated[float, typer.Option(help="Wait this long for the database, s.")] = 60.0,
    data_dir: DataDirOpt = None,
) -> None:
    """Wait for the database (retrying), then run the migrations to head."""
    from .settings import get_settings

    settings = get_settings(data_dir=data_dir)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    rev = db_upgrade(settings.resolved_database_url(), timeout=timeout)
    console.print(f"database at revision {rev}", markup=False, highlight=False)


def register(app: typer.Typer) -> typer.Typer:
    """Add ``deploy``, ``worker`` and ``db upgrade`` to the ``pesflow`` typer app (each with
    its log file from the start; the worker, a service, keeps Prefect's console output)."""
    app.command("deploy")(guard(deploy_cmd, always_log=True))
    app.command("worker")(guard(worker_cmd, always_log=True, service=True))
    db_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Database migrations.")
    db_app.command("upgrade")(guard(db_upgrade_cmd, always_log=True))
    app.add_typer(db_app, name="db")
    return app
