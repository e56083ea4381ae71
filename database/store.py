"""The repository layer: :class:`Store` owns the engine, sessions and transactions.

Every public method is one transaction: it commits when it returns and rolls back completely
when it raises, so callers never handle sessions and a failure never leaves half-written rows.
Methods return plain dataclasses from :mod:`database.records`. The methods live in small
modules by topic (``repo_lifecycle``, ``repo_campaigns``, ``repo_structures``,
``repo_progress``, ``repo_labels``, ``repo_datasets``, ``repo_outcomes``, ``repo_models``);
:class:`Store` puts them together.
"""

from __future__ import annotations

from .convert import CampaignRef, hash_token, hill_formula
from .repo_campaigns import CampaignsRepo
from .repo_datasets import DatasetsRepo
from .repo_models import ModelsRepo
from .repo_outcomes import LabelOutcomesRepo
from .repo_progress import ProgressRepo
from .resilience import wrap_public_methods

__all__ = ["CampaignRef", "Store", "hash_token", "hill_formula"]


@wrap_public_methods
class Store(CampaignsRepo, DatasetsRepo, LabelOutcomesRepo, ProgressRepo, ModelsRepo):
    """Repository over one database (SQLite file or PostgreSQL).

    Create with :meth:`from_url` or :meth:`sqlite`; both migrate the schema to head unless
    ``migrate=False``. Thread-safe: every method opens its own session. Use as a context
    manager or call :meth:`close`. Availability errors (read-only, disk full, locked,
    connection lost) are retried with backoff (``db_retry``) and then raised as one
    :class:`~database.errors.DatabaseUnavailableError` naming the database and the cause
    (:mod:`database.resilience`).
    """
