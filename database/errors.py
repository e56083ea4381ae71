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
