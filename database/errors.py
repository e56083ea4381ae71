"""Errors raised by the database package.

Every error caused by bad input is a :class:`ValueError` subclass whose message names the
problem; the operation that raised it has left the database unchanged.
"""

from __future__ import annotations


class DatabaseInputError(ValueError):
    """Bad input: wrong array shape, non-finite value, missing field, unknown status..."""


class NotFoundError(DatabaseInputError, LookupError):
    """A campaign, iteration, structure, label or token that does not exist."""


class UnknownCampaignError(NotFoundError):
    """The campaign named or numbered does not exist."""


class DuplicateError(DatabaseInputError):
    """An object with the same unique name already exists (e.g. a campaign name)."""


class LabelStateError(DatabaseInputError):
    """A label is not in a state that allows the requested transition
    (e.g. storing a result for a label that is already ``done``)."""


class UnsafeTestDatabaseError(RuntimeError):
    """Refusal to run destructive test/benchmark code against a non-test database."""


class StatusConflictError(DatabaseInputError):
    """A campaign status change that its current status does not allow (e.g. pausing a
    cancelled campaign). ``current`` and ``requested`` name both statuses."""

    def __init__(self, message: str, *, current: str, requested: str) -> None:
        super().__init__(message)
        self.current = current
        self.requested = requested


class LeaseHeldError(RuntimeError):
    """Another live process holds the campaign (one writer per campaign); ``lease`` names it."""

    def __init__(self, message: str, lease) -> None:
        super().__init__(message)
        self.lease = lease


class LeaseLostError(RuntimeError):
    """This process's lease on a campaign expired and was taken over (or released): it must
    stop writing to the campaign."""


class DatabaseUnavailableError(RuntimeError):
    """The database refused or failed an operation after retries (read-only, disk full,
    connection lost, locked, I/O error). ``cause`` is one of those words; the message names the
    database (file path or host/database) and the driver's own error."""

    def __init__(self, message: str, *, cause: str, where: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.where = where
