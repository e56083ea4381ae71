"""The values the database stores and checks: statuses, failure kinds, token scopes, step
names. Label statuses and failure kinds are the shared ones of
:mod:`structure_checks.vocabulary` (the labelers report the same failure kinds).
"""

from __future__ import annotations

from structure_checks.vocabulary import FAILURE_KINDS, LABEL_STATUSES, OTHER_FAILURE

__all__ = [
    "CAMPAIGN_STATUSES",
    "FAILURE_KINDS",
    "ITERATION_STATUSES",
    "ITERATION_STEPS",
    "LABEL_STATUSES",
    "OTHER_FAILURE",
    "STRUCTURE_LABEL_FILTERS",
    "TOKEN_SCOPES",
    "WALKER_STATUSES",
]

CAMPAIGN_STATUSES = (
    "created",
    "queued",
    "running",
    "paused",
    "interrupted",
    "cancelled",
    "converged",
    "failed",
)
"""A campaign's states; changes go through :data:`database.CAMPAIGN_TRANSITIONS`."""
ITERATION_STATUSES = ("created", "running", "done", "failed")
WALKER_STATUSES = ("done", "failed")
TOKEN_SCOPES = ("read", "operate", "admin")
"""API token scopes, least to most powerful (each includes the ones before it)."""
ITERATION_STEPS = ("seed", "train", "explore", "select", "label", "decide")
"""The steps of an iteration, in order (their completion rows and timings)."""
STRUCTURE_LABEL_FILTERS = (*LABEL_STATUSES, "unlabelled")
"""Label-status filters of a structure listing: its newest label's status, or none."""
