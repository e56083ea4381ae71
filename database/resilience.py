"""Database failures that are not the caller's fault: classified, retried, reported.

Every public :class:`database.Store` method is one transaction, so it can be run again after
the database rolled it back. :func:`retrying` wraps the methods: an operational error (SQLite's
``SQLITE_READONLY`` / ``SQLITE_FULL`` / ``SQLITE_BUSY`` / ``SQLITE_IOERR``, PostgreSQL's
SQLSTATE classes 08 (connection), 25006 (read-only transaction), 53 (insufficient resources),
40 (serialisation failure / deadlock), 55P03 (lock not available), or a dropped connection) is
retried with exponential backoff; when the retries are spent it becomes one
:class:`~database.errors.DatabaseUnavailableError` that names the database (file path, or
``host:port/database``), the cause in words and the driver's own message. Errors of the input
(constraint violations, :class:`~database.errors.DatabaseInputError`) are never retried.
Only the outermost call retries: a method that calls another does not multiply the attempts.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from .errors import DatabaseUnavailableError

__all__ = ["DbRetry", "classify", "describe_database", "retrying"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_SQLITE = {
    "SQLITE_READONLY": "read-only",
    "SQLITE_FULL": "disk full",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_IOERR": "I/O error",
    "SQLITE_CANTOPEN": "cannot open the file",
    "SQLITE_PROTOCOL": "locked",
}
_SQLITE_TEXT = (
    ("readonly", "read-only"),
    ("read-only", "read-only"),
    ("disk is full", "disk full"),
    ("database is locked", "locked"),
    ("disk i/o error", "I/O error"),
    ("unable to open", "cannot open the file"),
)
_PG = {
    "25006": "read-only",
    "53100": "disk full",
    "53200": "out of memory",
    "53300": "too many connections",
    "40001": "serialisation conflict",
    "40P01": "deadlock",
    "55P03": "locked",
    "57P01": "connection lost",
    "57P02": "connection lost",
    "57P03": "database starting up",
}


@dataclass(frozen=True)
class DbRetry:
    """How often and how patiently a failed database call is retried: ``attempts`` tries in
    all, waiting ``base_delay_s * 2**k`` (at most ``max_delay_s``) between them — by default
    24 s in all, enough for a PostgreSQL restart or a fail-over to a standby."""

    attempts: int = 8
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0

    def delays(self) -> list[float]:
        """The waits between the tries, s."""
        return [min(self.max_delay_s, self.base_delay_s * 2**k) for k in range(self.attempts - 1)]


def classify(error: BaseException) -> str | None:
    """The cause of an availability error in words (``read-only``, ``disk full``, ``locked``,
    ``connection lost``, ``I/O error`` ...), or ``None`` for errors that retrying cannot fix
    (bad input, constraint violations, programming errors)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return "connection lost"
    if not isinstance(
        error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DatabaseError
    ):
        return None
    if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError):
        return None
    orig = getattr(error, "orig", None)
    name = getattr(orig, "sqlite_errorname", None)
    if name:
        for prefix, cause in _SQLITE.items():
            if name.startswith(prefix):
                return cause
    state = getattr(orig, "sqlstate", None)
    if state:
        if state in _PG:
            return _PG[state]
        if state.startswith("08"):
            return "connection lost"
        if state.startswith("53"):
            return "insufficient resources"
    text = str(orig or error).lower()
    for needle, cause in _SQLITE_TEXT:
        if needle in text:
            return cause
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return "connection lost" if "connect" in text or "closed" in text else "unavailable"
    return None


def describe_database(engine: Engine) -> str:
    """Where the database is, for messages: the SQLite file, or ``host:port/database``."""
    u = engine.url
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database or ':memory:'}"
    return f"PostgreSQL {u.host or 'localhost'}:{u.port or 5432}/{u.database}"


_depth = threading.local()


def retrying(method: F) -> F:
    """Wrap a :class:`Store` method: retry availability errors (see module docstring) with
    the store's :class:`DbRetry` (``store.db_retry``), then raise
    :class:`DatabaseUnavailableError`."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, "n", 0) > 0:
            return method(self, *args, **kwargs)
        policy: DbRetry = getattr(self, "db_retry", DbRetry())
        delays = policy.delays()
        t0 = time.monotonic()
        for k in range(len(delays) + 1):
            _depth.n = getattr(_depth, "n", 0) + 1
            try:
                return method(self, *args, **kwargs)
            except sa_exc.SQLAlchemyError as err:
                cause = classify(err)
                if cause is None:
                    raise
                if k == len(delays):
                    where = describe_database(self.engine)
                    driver = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
                    raise DatabaseUnavailableError(
                        f"database {where} is unavailable ({cause}) during {method.__name__}: "
                        f"{driver} (tried {k + 1} times over {time.monotonic() - t0:.1f} s)",
                        cause=cause,
                        where=where,
                    ) from err
                log.warning(
                    "database %s (%s) in %s; retrying in %.1f s",
                    cause,
                    type(err.orig if getattr(err, "orig", None) else err).__name__,
                    method.__name__,
                    delays[k],
                )
            finally:
                _depth.n -= 1
            time.sleep(delays[k])
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper  # type: ignore[return-value]


NOT_WRAPPED = frozenset({"session", "close", "upgrade", "from_url", "sqlite"})


def wrap_public_methods(cls: type) -> type:
    """Class decorator: :func:`retrying` on every public plain method of ``cls`` and its
    bases (not the session context manager, lifecycle or class methods)."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if name.startswith("_") or name in NOT_WRAPPED or name in seen:
                continue
            seen.add(name)
            if callable(value) and not isinstance(value, classmethod | staticmethod | type):
                setattr(cls, name, retrying(getattr(cls, name)))
    return cls
