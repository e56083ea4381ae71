"""The repository layer: :class:`Store` owns the engine, sessions and transactions.

Every public method is one transaction: it commits when it returns and rolls back completely
when it raises, so callers never handle sessions and a failure never leaves half-written rows.
Methods return plain dataclasses from :mod:`database.records`. The methods live in small
modules by topic (``repo_campaigns``, ``repo_structures``, ``repo_labels``, ``repo_models``);
:class:`Store` puts them together.
"""

from __future__ import annotations

from .convert import CampaignRef, hash_token, hill_formula
from .repo_campaigns import CampaignsRepo
from .repo_labels import LabelsRepo
from .repo_models import ModelsRepo

__all__ = ["CampaignRef", "Store", "hash_token", "hill_formula"]


class Store(CampaignsRepo, LabelsRepo, ModelsRepo):
    """Repository over one database (SQLite file or PostgreSQL).

    Create with :meth:`from_url` or :meth:`sqlite`; both migrate the schema to head unless
    ``migrate=False``. Thread-safe: every method opens its own session. Use as a context
    manager or call :meth:`close`.
    """
