"""How the CLI shows a campaign: the per-iteration summary (rich and Markdown tables) and
progress bars (:class:`RichReporter`, a :class:`workflows.progress.Reporter`)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "STEP_TIMES",
    "RichReporter",
    "epochs_cell",
    "markdown_regimes",
    "markdown_table",
    "regime_table",
    "summary_table",
    "timing_totals",
]

STEP_TIMES = ("train", "explore", "label")
"""The steps whose wall time the tables show: training, MD (exploration), DFT (labelling)."""


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def timing_totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Wall seconds of each of :data:`STEP_TIMES` summed over the iterations (``rows`` of
    :func:`database.queries.summary_rows`); iteration 0's ``label`` includes the bootstrap and
    validation labels."""
    return {k: sum(float(r["timings"].get(k) or 0.0) for r in rows) for k in STEP_TIMES}


def _times(timings: dict[str, Any], sep: str) -> str:
    return sep.join(_fmt(timings.get(k), ".1f") for k in STEP_TIMES)


def summary_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """The per-iteration summary as a rich table, with a last row of the total wall time of
    training, MD and DFT (:func:`timing_totals`)."""
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
            _times(tm, "/"),
        )
    if rows:
        t.add_section()
        t.add_row("all", f"{rows[-1]['labels_total']}", *[""] * 9, _times(timing_totals(rows), "/"))
    return t


def regime_table(rows: list[dict[str, Any]]) -> Table | None:
    """Validation errors per regime of the latest iteration's model (``val_regimes`` of the
    last row that has them) as a rich table; ``None`` when no model has per-regime errors."""
    found = [r for r in rows if r.get("val_regimes")]
    if not found:
        return None
    row = found[-1]
    t = Table(title=f"validation errors per regime, model of iteration {row['iteration']}")
    cols = ("regime", "frames", "F RMSE meV/Å", "F MAE meV/Å", "F max meV/Å")
    more = ("E RMSE meV/atom", "E max meV/atom", "S RMSE GPa", "90% bound", "covered (n)")
    for col in (*cols, *more):
        t.add_column(col, justify="left" if col == "regime" else "right")
    for name, m in row["val_regimes"].items():
        t.add_row(name, *_regime_cells(m))
    return t


def _regime_cells(m: dict[str, Any]) -> list[str]:
    covered = m.get("covered")
    return [
        _fmt(m.get("n_frames"), "d"),
        _fmt(m.get("force_rmse_meV"), ".1f"),
        _fmt(m.get("force_mae_meV"), ".1f"),
        _fmt(m.get("force_max_meV"), ".0f"),
        _fmt(m.get("energy_rmse_meV"), ".2f"),
        _fmt(m.get("energy_max_meV"), ".2f"),
        _fmt(m.get("stress_rmse_gpa"), ".3f"),
        "-" if m.get("bound_scale") is None else f"{m['bound_scale']:.2f} x dev",
        "-" if covered is None else f"{100 * covered:.0f} % ({m.get('covered_n')})",
    ]


def markdown_regimes(rows: list[dict[str, Any]]) -> str:
    """:func:`regime_table` as Markdown (empty when no model has per-regime errors)."""
    found = [r for r in rows if r.get("val_regimes")]
    if not found:
        return ""
    lines = [
        "| regime | frames | F RMSE (meV/Å) | F MAE (meV/Å) | F max (meV/Å) | E RMSE (meV/atom) "
        "| E max (meV/atom) | S RMSE (GPa) | 90% bound | covered (n) |",
        "|" + "---|" * 10,
    ]
    for name, m in found[-1]["val_regimes"].items():
        lines.append(f"| {name} | " + " | ".join(_regime_cells(m)) + " |")
    return "\n".join(lines)


def epochs_cell(row: dict[str, Any]) -> str:
    """``epochs/max`` of the iteration's training, marked when the time cap stopped it."""
    if row.get("epochs") is None:
        return "-"
    cell = f"{row['epochs']}/{row['max_epochs']}" if row.get("max_epochs") else str(row["epochs"])
    return cell + " (time cap)" if row.get("time_capped") else cell


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The per-iteration summary as a Markdown table (for the README), with a last row of the
    total wall time of training, MD and DFT (:func:`timing_totals`)."""
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
            f"{epochs_cell(r)} | {_times(tm, ' / ')} |"
        )
    if rows:
        total = f"**{_times(timing_totals(rows), ' / ')}**"
        lines.append(f"| all | {rows[-1]['labels_total']} |" + " |" * 8 + f" {total} |")
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
            f", val force RMSE {_fmt(row['val_force_rmse_meV'], '.1f')} meV/Å" + _worst_regime(row),
            markup=False,
            highlight=False,
        )
        sys.stdout.flush()


def _worst_regime(row: dict[str, Any]) -> str:
    regimes = {
        k: v["force_rmse_meV"]
        for k, v in (row.get("val_regimes") or {}).items()
        if v.get("force_rmse_meV") is not None
    }
    if len(regimes) < 2:
        return ""
    worst = max(regimes, key=lambda k: regimes[k])
    return f" (worst regime {worst}: {regimes[worst]:.1f})"
