"""The logging handlers of a ``pesflow`` command (see :mod:`workflows.logs`): its log file and
the console that shows records only at the level the user asked for."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "FALLBACK_DIR_NAME",
    "LOGGER_NAME",
    "QUIET_BELOW_WARNING",
    "CommandLogHandler",
    "ConsoleLogHandler",
    "one_line",
]

LOGGER_NAME = "pesflow"
"""The commands' own logger (its errors are the ``error:`` line, not console records)."""
FALLBACK_DIR_NAME = "pesflow-logs"
# INFO records of these loggers are one line per HTTP request (Prefect's client): WARNING up
QUIET_BELOW_WARNING = (
    "httpx",
    "httpcore",
    "urllib3",
    "hpack",
    "websockets",
    "alembic.runtime.plugins",
)


def one_line(message: object, limit: int | None = None) -> str:
    """``message`` with all whitespace runs (newlines included) collapsed to one space;
    cut to ``limit`` characters (with ``…``) when given."""
    text = " ".join(str(message).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _writable_dir(folder: Path) -> bool:
    """Create ``folder`` if needed; whether files can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


class _Formatter(logging.Formatter):
    """``2026-11-22T10:00:00.123Z INFO    prefect.flow_runs [flow run 'x'] message``."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s%(run)s [%(threadName)s] %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )

    def format(self, record: logging.LogRecord) -> str:
        """The record with its Prefect flow/task run name, when it has one."""
        run = ""
        for attr, what in (("task_run_name", "task run"), ("flow_run_name", "flow run")):
            value = getattr(record, attr, None)
            if value:
                run = f" [{what} {value!r}]"
                break
        record.run = run
        return super().format(record)


class _QuietFilter(logging.Filter):
    """Drop INFO and below of the loggers in :data:`QUIET_BELOW_WARNING`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        return not any(name == q or name.startswith(q + ".") for q in QUIET_BELOW_WARNING)


class CommandLogHandler(logging.FileHandler):
    """The command's log file (opened on the first record). A failure to write it is kept
    in :attr:`failure` instead of being printed (a full disk must not break the one-line
    error). Prefect keeps root handlers like this one (its class name has no leading ``_``)."""

    def __init__(self, path: Path, level: int) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setLevel(level)
        self.setFormatter(_Formatter())
        self.addFilter(_QuietFilter())
        self.failure: str | None = None

    def _open(self) -> Any:
        """Open the file, creating its directory first; when that directory cannot be
        created or written, the same file name under ``<temp dir>/pesflow-logs``."""
        path = Path(self.baseFilename)
        if not _writable_dir(path.parent):
            fallback = Path(tempfile.gettempdir()) / FALLBACK_DIR_NAME
            _writable_dir(fallback)
            self.baseFilename = str(fallback / path.name)
        return super()._open()

    @property
    def path(self) -> Path:
        """The file (moved to the fallback directory if its own could not be made)."""
        return Path(self.baseFilename)

    def handleError(self, record: logging.LogRecord) -> None:
        """Print nothing; remember the first failure to open or write the file (a record
        that cannot be formatted is only dropped)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and self.failure is None:
            self.failure = one_line(f"{type(exc).__name__}: {exc}")

    @property
    def opened(self) -> bool:
        """Whether the file has been opened (something was written to it)."""
        return self.stream is not None


class ConsoleLogHandler(logging.StreamHandler):
    """Log records on stderr at the level the user asked for (``PREFECT_LOGGING_HANDLERS_
    CONSOLE_LEVEL``) or, for services, the configured one; Prefect's console format. The
    command's own records (logger ``pesflow``) are left out: its ``error:`` line says it."""

    def __init__(self, level: int) -> None:
        super().__init__(sys.stderr)
        self.setLevel(level)
        self.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                datefmt="%H:%M:%S",
            )
        )
        self.addFilter(_QuietFilter())
        self.addFilter(lambda record: record.name != LOGGER_NAME)
