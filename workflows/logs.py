"""The log file of one ``pesflow`` command, and a console that shows only one-line errors.

Every command that changes or runs something (``run``, ``resume``, ``export``,
``deploy``, ``worker``, ``db upgrade``, ``serve``, ``token create|revoke``) writes
``<log dir>/pesflow-<UTC yyyymmddTHHMMSS>-<pid>.log`` from its start; read-only commands
(``status``, ``validate``, ``init``, ``token list``) create that file only when they log an
error. The log directory is ``PESFLOW_LOG_DIR``, default ``<data dir>/logs``; when it cannot be
created or written, ``<temp dir>/pesflow-logs``.

The file handler sits on the root logger, so everything that propagates there lands in the
file with UTC timestamps at INFO and above: pesflow's packages (``mlip_core``,
``dft_adapters``, ``database``, ``workflows``, ``api``), Prefect (``prefect``,
``prefect.flow_runs``, ``prefect.task_runs``: their level is ``PREFECT_LOGGING_LEVEL``, INFO
by default) and any library (HTTP clients' one-line-per-request INFO records are left out).

In the CLI process (:func:`own_process`, called by the ``pesflow`` entry point) the console
shows no log records and no tracebacks:

- the handler is on the root logger before Prefect is imported, and Prefect then leaves the
  root logger alone (it keeps "user" root handlers), so Prefect's console handler, which
  prints failed task and flow runs with their tracebacks, is not installed;
- ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=CRITICAL`` is exported for child processes (e.g.
  local Dask workers) unless the user set it (or ``PESFLOW_PREFECT_CONSOLE_LEVEL``); when the
  user did, records at that level are printed to stderr as before. Long-running services
  (``serve``, ``worker``) keep that console at the configured level (default WARNING): it is
  their log;
- Python warnings go to logging (:func:`logging.captureWarnings`); uncaught exceptions in
  threads and "exception ignored" reports go to the file; an uncaught exception of the main
  thread is logged and reported as one ``error:`` line.

Outside the CLI process (e.g. typer's ``CliRunner`` in tests) a command only adds its file
handler for its duration and restores the root logger afterwards.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from .log_handlers import (
    FALLBACK_DIR_NAME,
    LOGGER_NAME,
    CommandLogHandler,
    ConsoleLogHandler,
    one_line,
)

__all__ = [
    "CONSOLE_LEVEL_ENV",
    "CommandLog",
    "CommandLogHandler",
    "ConsoleLogHandler",
    "command_log",
    "current",
    "log_file_path",
    "one_line",
    "own_process",
]

CONSOLE_LEVEL_ENV = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
PESFLOW_CONSOLE_LEVEL_ENV = "PESFLOW_PREFECT_CONSOLE_LEVEL"
MESSAGE_LIMIT = 1000  # characters of an error message on the console when the log has it all

log = logging.getLogger(LOGGER_NAME)

_owned = False  # this process is the `pesflow` command (hooks installed, handlers kept)
_current: CommandLog | None = None


def log_file_path(
    log_dir: Path | None, *, now: datetime | None = None, pid: int | None = None
) -> Path:
    """``<log_dir>/pesflow-<UTC yyyymmddTHHMMSS>-<pid>.log`` (``None``: under the fallback
    directory ``<temp dir>/pesflow-logs``). Nothing is created here."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    name = f"pesflow-{stamp:%Y%m%dT%H%M%S}-{os.getpid() if pid is None else pid}.log"
    return (log_dir or Path(tempfile.gettempdir()) / FALLBACK_DIR_NAME) / name


def _level(value: str | int | None, default: int = logging.WARNING) -> int:
    """A logging level from ``"WARNING"``, ``"warning"``, ``"30"`` or ``30``."""
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    return level if isinstance(level, int) else default


class CommandLog:
    """The log file of one command; see the module docstring."""

    def __init__(self, command: str, path: Path, *, always: bool) -> None:
        self.command = command
        self.always = always
        self.started = time.monotonic()
        self.handler = CommandLogHandler(path, logging.INFO if always else logging.ERROR)

    @property
    def path(self) -> Path:
        """The log file (created when the first record is written)."""
        return self.handler.path

    @property
    def written(self) -> bool:
        """Whether the file exists with this command's records in it."""
        return self.handler.opened and self.handler.failure is None

    def where(self) -> str:
        """``<path>``, or why the log could not be written."""
        if self.handler.failure is not None:
            return f"log not written ({self.path}: {self.handler.failure})"
        return str(self.path)

    def start(self, params: Mapping[str, Any]) -> None:
        """The header: command, parameters, process (commands that always log)."""
        shown = ", ".join(
            f"{k}={v}" if isinstance(v, Path) else f"{k}={v!r}"
            for k, v in params.items()
            if _plain(v)
        )
        argv = " ".join(sys.argv) if _owned else "(in-process)"
        log.info(
            "pesflow %s (%s); pid %d on %s, python %s, cwd %s; argv: %s",
            self.command,
            shown,
            os.getpid(),
            _hostname(),
            sys.version.split()[0],
            os.getcwd(),
            argv,
        )

    def error(
        self,
        message: str,
        exc: BaseException | None = None,
        *,
        trace: bool = True,
        level: int = logging.ERROR,
    ) -> bool:
        """Record a failure (with ``exc``'s traceback when ``trace``); without a trace only
        into a file that already exists. Returns whether the file now holds it."""
        if not trace and not self.handler.opened:
            return False
        exc_info = (type(exc), exc, exc.__traceback__) if (trace and exc is not None) else None
        log.log(level, "pesflow %s failed: %s", self.command, message, exc_info=exc_info)
        self.handler.flush()
        return self.written

    def finish(self, code: int) -> None:
        """The footer: exit code and wall time (only into a file that exists)."""
        if self.handler.opened:
            log.info(
                "pesflow %s exited with code %d after %.1f s",
                self.command,
                code,
                time.monotonic() - self.started,
            )
            self.handler.flush()


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | Path | list | tuple)


def _hostname() -> str:
    import socket

    return socket.gethostname()


def current() -> CommandLog | None:
    """The log of the command running in this process, if any."""
    return _current


def _log_dir(data_dir: Path | None) -> Path | None:
    """``PESFLOW_LOG_DIR`` or ``<data dir>/logs`` (``None`` when the settings are invalid:
    the command then reports that, logged under the temp dir)."""
    try:
        from .settings import get_settings

        return get_settings(data_dir=data_dir).resolved_log_dir()
    except Exception:
        return None


def _console_level(service: bool) -> int | None:
    """The console level for log records in the CLI process, ``None`` for none; exports
    ``CRITICAL`` for Prefect in child processes when the user set nothing."""
    explicit = os.environ.get(CONSOLE_LEVEL_ENV) or os.environ.get(PESFLOW_CONSOLE_LEVEL_ENV)
    if explicit:
        return _level(explicit)
    if service:  # its console is its log: the configured default (settings: WARNING)
        from .settings import PesflowSettings

        return _level(PesflowSettings.model_fields["prefect_console_level"].default)
    os.environ[CONSOLE_LEVEL_ENV] = "CRITICAL"
    return None


@contextmanager
def command_log(
    command: str,
    data_dir: Path | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    always: bool,
    service: bool = False,
) -> Iterator[CommandLog]:
    """The log of one command (``always``: opened with a header now, INFO and above; else
    only errors, opened by the first). In the CLI process the handlers stay until exit (so
    that shutdown messages land in the file too); otherwise the root logger is restored."""
    global _current
    cmd_log = CommandLog(command, log_file_path(_log_dir(data_dir)), always=always)
    root = logging.getLogger()
    old_level = root.level
    added: list[logging.Handler] = [cmd_log.handler]
    if _owned:
        level = _console_level(service)
        if level is not None:
            added.append(ConsoleLogHandler(level))
    for handler in added:
        root.addHandler(handler)
    if always and root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    previous, _current = _current, cmd_log
    try:
        if always:
            cmd_log.start(params or {})
        yield cmd_log
    finally:
        _current = previous
        if not _owned:
            for handler in added:
                root.removeHandler(handler)
                handler.close()
            root.setLevel(old_level)


# --------------------------------------------------------------------------- the CLI process
def own_process() -> None:
    """Called once by the ``pesflow`` entry point: warnings go to logging, uncaught
    exceptions (main thread, other threads, "exception ignored") to the command's log
    instead of stderr, and commands keep their log handlers until exit."""
    global _owned
    if _owned:
        return
    _owned = True
    logging.captureWarnings(True)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook


def _fallback_log() -> CommandLog:
    """The current command's log, or a new one (an exception outside any command)."""
    if _current is not None:
        return _current
    cmd_log = CommandLog("(no command)", log_file_path(_log_dir(None)), always=False)
    logging.getLogger().addHandler(cmd_log.handler)
    return cmd_log


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """An exception no command caught: its trace to the log, one line to stderr."""
    if exc.__traceback__ is None:
        exc = exc.with_traceback(tb)
    cmd_log = _fallback_log()
    cmd_log.error(f"uncaught {exc_type.__name__}", exc)
    text = one_line(exc, MESSAGE_LIMIT)
    sys.stderr.write(
        f"error: {exc_type.__name__}{': ' + text if text else ''} (full trace: {cmd_log.where()})\n"
    )
    sys.stderr.flush()


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread: to the log (Python prints it to stderr)."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = args.exc_value
    log.error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, exc, args.exc_traceback) if exc is not None else None,
    )


def _unraisablehook(unraisable: Any) -> None:
    """An "Exception ignored in ..." report (``__del__``, GC callbacks): to the log."""
    what = unraisable.err_msg or "Exception ignored in"
    exc = unraisable.exc_value
    log.warning(
        "%s: %r",
        what,
        unraisable.object,
        exc_info=(unraisable.exc_type, exc, unraisable.exc_traceback) if exc is not None else None,
    )
