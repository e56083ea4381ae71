"""What every ``pesflow`` command shares (typer + rich): the typer app class, the consoles,
the one-line errors and exit codes, the per-command log file (:func:`guard`).

Exit codes: 0 success (converged, or stopped by max_iterations / label budget: the table says
which), 1 runtime failure (e.g. too many labelling failures), 2 bad config, input or usage,
130 interrupted. Every failure is one ``error:`` line on stderr, never a traceback: the trace
goes to the command's log file (:mod:`workflows.logs`), which the line names. Prefect is
imported only by the commands that run flows, after its environment is set
(:func:`workflows.settings.configure_prefect_env`).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from . import lease, logs
from .config import ConfigError

__all__ = [
    "CliError",
    "DataDir",
    "PesflowTyper",
    "WaitOption",
    "console",
    "err_console",
    "guard",
    "new_app",
]


class PesflowTyper(typer.Typer):
    """The ``pesflow`` typer app. Called as a program (the ``pesflow`` entry point,
    ``python -m pesflow``) it sets up the process's logging
    (:func:`workflows.logs.own_process`) and reports usage errors (unknown option, missing
    argument) as one ``error:`` line, exit 2. Typer's ``CliRunner`` does not come here."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        logs.own_process()
        kwargs["standalone_mode"] = False
        try:
            rv = typer.main.get_command(self).main(*args, **kwargs)
        except Exception as exc:
            sys.exit(_usage_error(exc))
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_error(exc: Exception) -> int:
    """Print a click usage error (or abort) raised outside the commands as one line and
    return its exit code; anything else is re-raised (the excepthook reports it)."""
    name = type(exc).__name__
    message = getattr(exc, "format_message", None)
    code = getattr(exc, "exit_code", None)
    if name == "NoArgsIsHelpError":  # the help is already printed (as typer does)
        text = message() if callable(message) else ""
        if text:
            print(text, file=sys.stderr)
        return int(code or 2)
    if name == "Abort":
        _print_error("aborted")
        return 1
    if not callable(message) or not isinstance(code, int):
        raise exc
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _print_error(logs.one_line(message()) + hint)
    return code


def new_app() -> PesflowTyper:
    """An empty ``pesflow`` app (the commands are added by :mod:`pesflow.cli`)."""
    return PesflowTyper(
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
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait for another process that holds the campaign to finish "
        "(default: refuse at once).",
    ),
]


class CliError(Exception):
    """A one-line failure with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _print_error(text: str) -> None:
    """``error: <text>`` as one line on stderr (no wrapping, no markup)."""
    err_console.print(f"error: {text}", markup=False, highlight=False, emoji=False, soft_wrap=True)


def _fail(message: object, code: int, log_note: str = "") -> NoReturn:
    """Print ``error: <message>`` (whitespace collapsed to one line; ``log_note`` in
    parentheses after it) and exit with ``code``."""
    limit = logs.MESSAGE_LIMIT if log_note else None
    _print_error(logs.one_line(message, limit) + (f" ({log_note})" if log_note else ""))
    raise typer.Exit(code)


# commands that change or run something: their log file is written from the start
_LOGGED_COMMANDS = frozenset({"run", "resume", "export"})


def _known_failures() -> tuple[type[BaseException], ...]:
    """Runtime failures whose message says it all (exit 1, the trace still logged)."""
    from database import DatabaseUnavailableError, LeaseHeldError, LeaseLostError

    from .context import CampaignFailedError
    from .local_api import LocalAPIError

    return (
        CampaignFailedError,
        LeaseHeldError,
        LeaseLostError,
        DatabaseUnavailableError,
        LocalAPIError,
    )


def _report(exc: BaseException, cmd_log: logs.CommandLog) -> NoReturn:
    """One ``error:`` line for ``exc`` (its trace to the log) and the exit code:
    2 bad input (the message alone), 1 runtime failure, 130 interrupted."""
    from database import DatabaseInputError

    from .lease import Terminated

    if isinstance(exc, KeyboardInterrupt | Terminated):
        noted = cmd_log.error("interrupted", exc, level=logging.WARNING)
        note = f"details: {cmd_log.where()}" if noted else ""
        if isinstance(exc, Terminated):  # 128 + SIGTERM, as a shell reports it
            _fail(f"{exc}; `pesflow resume` continues the campaign", 143, note)
        _fail("interrupted; `pesflow resume` continues the campaign", 130, note)
    user_error = isinstance(exc, ConfigError | DatabaseInputError) or (
        isinstance(exc, CliError) and exc.code == 2
    )
    if user_error:
        cmd_log.error(logs.one_line(exc), trace=False)
        _fail(exc, exc.code if isinstance(exc, CliError) else 2)
    if isinstance(exc, (CliError, *_known_failures())):
        cmd_log.error(logs.one_line(exc), exc)
        code = exc.code if isinstance(exc, CliError) else 1
        _fail(exc, code, f"details: {cmd_log.where()}")
    text = logs.one_line(exc)
    cmd_log.error(f"{type(exc).__name__}: {text}", exc)
    _fail(
        f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
        1,
        f"full trace: {cmd_log.where()}",
    )


def guard(
    fn: Callable[..., Any] | None = None,
    *,
    always_log: bool | None = None,
    service: bool = False,
) -> Any:
    """Run a command with its log file (:func:`workflows.logs.command_log`) and turn every
    exception into one ``error:`` line with the right exit code (:func:`_report`).

    ``always_log``: write the log from the start (default: for the commands in
    :data:`_LOGGED_COMMANDS`; others write it only on error). ``service``: a long-running
    service (``serve``, ``worker``) whose console keeps showing log records. Use as
    ``@guard`` or ``guard(fn, always_log=True)``."""
    if fn is None:
        return functools.partial(guard, always_log=always_log, service=service)
    always = fn.__name__ in _LOGGED_COMMANDS if always_log is None else always_log
    command = fn.__name__.removesuffix("_cmd").replace("_", " ")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with logs.command_log(
            command, kwargs.get("data_dir"), kwargs, always=always, service=service
        ) as cmd_log:
            code = 1
            try:
                result = fn(*args, **kwargs)
                code = 0
                return result
            except typer.Exit as exc:
                code = exc.exit_code
                raise
            except (Exception, KeyboardInterrupt, lease.Terminated) as exc:
                try:
                    _report(exc, cmd_log)
                except typer.Exit as out:
                    code = out.exit_code
                    raise out from None
            finally:
                cmd_log.finish(code)

    return wrapper
