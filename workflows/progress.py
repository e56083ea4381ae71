"""Progress reporting from the steps to whatever front end is listening (the CLI's rich bars).

Steps call :func:`reporter` and never import rich; the CLI installs a reporter with
:func:`set_reporter`. The default reporter ignores everything.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["NullReporter", "Reporter", "reporter", "set_reporter"]


class Reporter(Protocol):
    """What the steps tell the front end."""

    def start(self, step: str, total: int | None, description: str) -> None:
        """A step begins (``total`` units of work, ``None`` if unknown)."""

    def advance(self, step: str, n: int = 1) -> None:
        """``n`` units of ``step`` are done."""

    def finish(self, step: str) -> None:
        """The step ended."""

    def message(self, text: str) -> None:
        """A one-line note (a cut trajectory, a stop reason)."""

    def iteration_done(self, row: dict[str, Any]) -> None:
        """An iteration finished; ``row`` is its summary (see :func:`workflows.steps.summary_rows`)."""


class NullReporter:
    """Ignores everything (library use, tests)."""

    def start(self, step: str, total: int | None, description: str) -> None:
        pass

    def advance(self, step: str, n: int = 1) -> None:
        pass

    def finish(self, step: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def iteration_done(self, row: dict[str, Any]) -> None:
        pass


_current: Reporter = NullReporter()


def set_reporter(new: Reporter | None) -> Reporter:
    """Install ``new`` (``None``: the null reporter); returns the previous one."""
    global _current
    old, _current = _current, new or NullReporter()
    return old


def reporter() -> Reporter:
    """The installed reporter."""
    return _current
