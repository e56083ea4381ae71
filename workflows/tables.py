"""How the CLI shows a campaign: the per-iteration summary (rich and Markdown tables) and
progress bars (:class:`RichReporter`, a :class:`workflows.progress.Reporter`)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["RichReporter", "epochs_cell", "markdown_table", "summary_table"]


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
        "epochs",
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
            epochs_cell(r),
            "/".join(_fmt(tm.get(k), ".1f") for k in ("train", "explore", "label")),
        )
    return t


def epochs_cell(row: dict[str, Any]) -> str:
    """``epochs/max`` of the iteration's training, marked when the time cap stopped it."""
    if row.get("epochs") is None:
        return "-"
    cell = f"{row['epochs']}/{row['max_epochs']}" if row.get("max_epochs") else str(row["epochs"])
    return cell + " (time cap)" if row.get("time_capped") else cell


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The per-iteration summary as a Markdown table (for the README)."""
    head = (
        "| iter | labels new/total | explored | accurate | candidate | failed | cut walkers "
        "| val F RMSE (meV/Å) | val E RMSE (meV/atom) | epochs | train / explore / label (s) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        tm = r["timings"]
        lines.append(
            f"| {r['iteration']} | {r['labels_new']}/{r['labels_total']} | {r['n_explored']} | "
            f"{_fmt(r['accurate'], '.2f')} | {_fmt(r['candidate'], '.2f')} | "
            f"{_fmt(r['failed'], '.2f')} | {r['cut_walkers']} | "
            f"{_fmt(r['val_force_rmse_meV'], '.1f')} | {_fmt(r['val_energy_rmse_meV'], '.2f')} | "
            f"{epochs_cell(r)} | "
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
        logging.getLogger("workflows").info(text)  # also in the command's log, even --quiet
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
