"""The ``pesflow`` command line (typer + rich).

Exit codes: 0 success (converged, or stopped by max_iterations / label budget: the table says
which), 1 runtime failure (e.g. too many labelling failures), 2 bad config or input. Errors are
one line on stderr, never a traceback. Prefect is imported only by the commands that run flows,
after its environment is set (:func:`workflows.settings.configure_prefect_env`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .config import ConfigError, example_config_text, load_config
from .settings import PesflowSettings, configure_prefect_env, get_settings

__all__ = ["app", "main", "summary_table"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="pesflow: active-learning campaigns for machine-learned potentials.",
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env PESFLOW_DATA_DIR, default ./data)."),
]


class CliError(Exception):
    """A one-line failure with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int) -> None:
    err_console.print(
        f"error: {' '.join(str(message).split())}", markup=False, highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def _guard(fn):
    """Turn known exceptions into one-line errors with the right exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from database import DatabaseInputError, NotFoundError

        from .steps import CampaignFailedError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CliError as exc:
            _fail(str(exc), exc.code)
        except ConfigError as exc:
            _fail(str(exc), 2)
        except (NotFoundError, DatabaseInputError) as exc:
            _fail(str(exc), 2)
        except CampaignFailedError as exc:
            _fail(str(exc), 1)
        except KeyboardInterrupt:
            _fail("interrupted; `pesflow resume` continues the campaign", 130)
        except Exception as exc:
            _fail(f"{type(exc).__name__}: {exc}", 1)

    return wrapper


def _settings(data_dir: Path | None) -> PesflowSettings:
    return get_settings(data_dir=data_dir)


# --------------------------------------------------------------------------- tables
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """The per-iteration summary as a rich table."""
    t = Table(title=title or None)
    for col in (
        "iter",
        "labels new/total",
        "failed labels",
        "explored",
        "accurate",
        "candidate",
        "failed",
        "cut",
        "val F RMSE meV/Å",
        "val E RMSE meV/atom",
        "train/explore/label s",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        tm = r["timings"]
        t.add_row(
            str(r["iteration"]),
            f"{r['labels_new']}/{r['labels_total']}",
            str(r["labels_failed"]),
            str(r["n_explored"]),
            _fmt(r["accurate"], ".2f"),
            _fmt(r["candidate"], ".2f"),
            _fmt(r["failed"], ".2f"),
            str(r["cut_walkers"]),
            _fmt(r["val_force_rmse_meV"], ".1f"),
            _fmt(r["val_energy_rmse_meV"], ".2f"),
            "/".join(_fmt(tm.get(k), ".1f") for k in ("train", "explore", "label")),
        )
    return t


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The per-iteration summary as a Markdown table (for the README)."""
    head = (
        "| iter | labels new/total | explored | accurate | candidate | failed | cut walkers "
        "| val F RMSE (meV/Å) | val E RMSE (meV/atom) | train / explore / label (s) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        tm = r["timings"]
        lines.append(
            f"| {r['iteration']} | {r['labels_new']}/{r['labels_total']} | {r['n_explored']} | "
            f"{_fmt(r['accurate'], '.2f')} | {_fmt(r['candidate'], '.2f')} | "
            f"{_fmt(r['failed'], '.2f')} | {r['cut_walkers']} | "
            f"{_fmt(r['val_force_rmse_meV'], '.1f')} | {_fmt(r['val_energy_rmse_meV'], '.2f')} | "
            + " / ".join(_fmt(tm.get(k), ".1f") for k in ("train", "explore", "label"))
            + " |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- progress
class RichReporter:
    """Progress bars per step and one line per finished iteration."""

    def __init__(self, con: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = con
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=con,
            transient=True,
            disable=not con.is_terminal,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, step: str, total: int | None, description: str) -> None:
        self.finish(step)
        self.tasks[step] = self.progress.add_task(description, total=total)

    def advance(self, step: str, n: int = 1) -> None:
        if step in self.tasks:
            self.progress.advance(self.tasks[step], n)

    def finish(self, step: str) -> None:
        tid = self.tasks.pop(step, None)
        if tid is not None:
            self.progress.remove_task(tid)

    def message(self, text: str) -> None:
        self.console.print(f"  {text}", markup=False, highlight=False)

    def iteration_done(self, row: dict[str, Any]) -> None:
        self.console.print(
            f"iteration {row['iteration']}: labels {row['labels_new']}/{row['labels_total']}, "
            f"accurate {_fmt(row['accurate'], '.2f')}, candidate {_fmt(row['candidate'], '.2f')}"
            f", val force RMSE {_fmt(row['val_force_rmse_meV'], '.1f')} meV/Å",
            markup=False,
            highlight=False,
        )
        sys.stdout.flush()


# --------------------------------------------------------------------------- commands
@app.command()
@_guard
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


@app.command()
@_guard
def validate(config: Annotated[Path, typer.Argument(help="Campaign YAML.")]) -> None:
    """Check a campaign config; exit 2 with a one-line reason when it is invalid."""
    cfg = load_config(config)
    n_walkers = sum(w.count for w in cfg.exploration.walkers)
    console.print(
        f"{config}: ok (campaign {cfg.name!r}, {len(cfg.structures)} structure "
        f"source(s), {n_walkers} walker(s), labeler {cfg.labeler.name!r})"
    )


def _run(
    handle, cfg, settings: PesflowSettings, *, retry_failed: bool = False, quiet: bool = False
) -> int:
    from . import progress
    from .steps import open_store, summary_rows

    t0 = time.perf_counter()
    configure_prefect_env(settings)
    from . import timing
    from .local_api import prefect_api

    store = open_store(handle.db_url)
    timing.clear()
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
    wall = time.perf_counter() - t0
    busy = timing.busy_seconds(since=t0)
    rows = summary_rows(store, handle.campaign_id)
    console.print(summary_table(rows, title=f"campaign {handle.name}"))
    console.print(f"{result['status']}: {result['message']}", markup=False, highlight=False)
    console.print(
        f"wall time {wall:.1f} s; inside MD/labelling/training {busy:.1f} s; "
        f"orchestration overhead {wall - busy:.1f} s ({100 * (wall - busy) / wall:.1f} %)",
        markup=False,
        highlight=False,
    )
    return 0


@app.command()
@_guard
def run(
    config: Annotated[Path, typer.Argument(help="Campaign YAML.")],
    data_dir: DataDir = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run a campaign (continues it if the same config was run before)."""
    from .steps import open_store, setup_campaign

    cfg = load_config(config)
    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.resolved_database_url())
    handle = setup_campaign(store, cfg, settings.data_dir)
    raise typer.Exit(_run(handle, cfg, settings, quiet=quiet))


@app.command()
@_guard
def resume(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    data_dir: DataDir = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry labels that failed.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Continue a stopped or killed campaign from the state in the database."""
    from .steps import open_context, open_store, reopen_campaign

    settings = _settings(data_dir)
    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign, settings.data_dir)
    ctx = open_context(handle)
    raise typer.Exit(_run(handle, ctx.cfg, settings, retry_failed=retry_failed, quiet=quiet))


@app.command()
@_guard
def status(
    campaign: Annotated[str | None, typer.Argument(help="Campaign name.")] = None,
    data_dir: DataDir = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown table.")] = False,
) -> None:
    """List campaigns, or show one campaign's per-iteration table."""
    from .steps import open_store, summary_rows

    settings = _settings(data_dir)
    if not Path(settings.data_dir).exists() and settings.database_url is None:
        raise CliError(f"no pesflow data in {settings.data_dir}", 2)
    store = open_store(settings.resolved_database_url())
    if campaign is None:
        t = Table(title="campaigns")
        for col in ("name", "status", "iterations", "labels done/failed/pending", "message"):
            t.add_column(col)
        for c in store.list_campaigns():
            n = store.count_labels(c.id)
            t.add_row(
                c.name,
                c.status,
                str(len(store.list_iterations(c.id))),
                f"{n['done']}/{n['failed']}/{n['pending'] + n['running']}",
                c.status_message or "",
            )
        console.print(t)
        return
    rec = store.get_campaign(campaign)
    if markdown:
        print(markdown_table(summary_rows(store, rec.id)))
        print(f"\n{rec.status}: {rec.status_message or ''}")
        return
    console.print(
        summary_table(summary_rows(store, rec.id), title=f"campaign {rec.name}: {rec.status}")
    )
    if rec.status_message:
        console.print(rec.status_message, markup=False, highlight=False)


@app.command()
@_guard
def export(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("export"),
    data_dir: DataDir = None,
) -> None:
    """Export the dataset (extxyz, REF_* keys), the committee checkpoint and a calculator
    loader."""
    from .export import export_campaign
    from .steps import open_context, open_store, reopen_campaign

    settings = _settings(data_dir)
    store = open_store(settings.resolved_database_url())
    handle = reopen_campaign(store, campaign, settings.data_dir)
    res = export_campaign(open_context(handle), out)
    console.print(
        f"{res.dataset} ({res.n_train} frames), {res.validation} "
        f"({res.n_validation} frames)"
        + (f", {res.checkpoint}, {res.loader}" if res.checkpoint else ", no model yet"),
        markup=False,
        highlight=False,
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_guard
def bench(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Argument(
            help="Campaign YAML (default: examples/cu_emt.yaml), or `al-efficiency [CONFIG] "
            "[--out DIR]` (default examples/bench_cu_emt.yaml)."
        ),
    ] = None,
) -> None:
    """Measure the orchestration overhead of a campaign (see workflows.bench); with
    `al-efficiency`, the labels active learning saves vs random (workflows.al_benchmark)."""
    if config == "al-efficiency":
        from .al_benchmark import main as al_main

        raise typer.Exit(al_main(list(ctx.args)))
    from .bench import main as bench_main

    raise typer.Exit(bench_main([str(config)] if config else []))


# `deploy`, `worker`, `db upgrade` (implemented in workflows.deploy)
from .deploy import register as _register_deploy  # noqa: E402

_register_deploy(app)


def main() -> None:
    """Entry point for ``python -m workflows.cli``."""
    app(prog_name="pesflow")


if __name__ == "__main__":
    sys.exit(main())
