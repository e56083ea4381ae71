"""Campaign lifecycle: the status state machine and the one-writer lease.

Status changes go through one table of allowed transitions (:data:`CAMPAIGN_TRANSITIONS`),
applied with the campaign row locked (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite), so two requests that race (a pause and a cancel) are serialised and the
later one is judged against the earlier one's result: ``cancelled`` is terminal, so a pause
that arrives after a cancel is refused and a cancel that arrives after a pause wins.

A campaign is run by at most one process, the holder of its lease (one ``campaign_leases`` row:
host, pid, purpose, heartbeat, expiry). :meth:`LifecycleRepo.acquire_lease` takes it atomically
with the change to ``running``; the holder renews it (:meth:`renew_lease`) and gives it back with
its final status (:meth:`release_lease`). A holder that dies stops renewing: once ``expires_at``
has passed, the campaign reads as ``interrupted`` (see :func:`database.convert.effective_status`)
and the next run takes the lease over without ``force``. Expiry is judged by the database
server's clock on PostgreSQL (hosts of a cluster may disagree) and the local clock on SQLite.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from .convert import CampaignRef, _campaign, _lease, effective_status
from .errors import DatabaseInputError, LeaseHeldError, StatusConflictError
from .models import CAMPAIGN_STATUSES, Campaign, CampaignLease
from .records import CampaignRecord, LeaseRecord
from .store_base import StoreBase
from .validation import check_choice, check_nonempty

__all__ = ["CAMPAIGN_TRANSITIONS", "TERMINAL_STATUSES", "LifecycleRepo"]

CAMPAIGN_TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"queued", "running", "paused", "cancelled"}),
    "queued": frozenset({"queued", "running", "paused", "interrupted", "cancelled"}),
    "running": frozenset(
        {"running", "queued", "paused", "interrupted", "cancelled", "converged", "failed"}
    ),
    "paused": frozenset({"paused", "queued", "running", "cancelled"}),
    "interrupted": frozenset({"queued", "running", "paused", "cancelled"}),
    "failed": frozenset({"queued", "running", "cancelled"}),
    "converged": frozenset(),
    "cancelled": frozenset(),
}
"""Allowed status changes, ``from -> {to}``. ``running`` is entered only with the lease
(:meth:`LifecycleRepo.acquire_lease`); ``converged`` and ``cancelled`` are terminal."""

TERMINAL_STATUSES = ("cancelled", "converged", "failed")
"""Statuses that set ``finished_at`` (``failed`` can still be resumed with ``--retry-failed``)."""

assert set(CAMPAIGN_TRANSITIONS) == set(CAMPAIGN_STATUSES)


class LifecycleRepo(StoreBase):
    """Campaign status transitions and leases."""

    def _lease_of(self, s: Session, campaign_id: int) -> CampaignLease | None:
        return s.get(CampaignLease, campaign_id)

    def _record(self, s: Session, c: Campaign) -> CampaignRecord:
        return _campaign(c, self._lease_of(s, c.id), self._db_now(s))

    @staticmethod
    def _apply(c: Campaign, status: str, message: str | None, now: datetime) -> None:
        c.status = status
        c.status_message = message
        c.updated_at = now
        if status == "running" and c.started_at is None:
            c.started_at = now
        c.finished_at = now if status in TERMINAL_STATUSES else None

    # ------------------------------------------------------------------ status
    def transition_campaign(
        self,
        campaign: CampaignRef,
        status: str,
        message: str | None = None,
        *,
        allowed_from: Collection[str] | None = None,
    ) -> CampaignRecord:
        """Change the campaign's status if :data:`CAMPAIGN_TRANSITIONS` allows it from the
        current (effective) status and, when given, the current status is in ``allowed_from``.

        Raises :class:`StatusConflictError` (naming both statuses) otherwise; the row is locked
        for the check and the change, so concurrent requests are applied one after the other.
        Entering ``running`` needs the lease: use :meth:`acquire_lease`."""
        check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        if status == "running":
            raise DatabaseInputError(
                "a campaign becomes running only with its lease (acquire_lease)"
            )
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            now = self._db_now(s)
            lease = self._lease_of(s, c.id)
            current = effective_status(c.status, _lease(lease, now) if lease else None)
            if (allowed_from is not None and current not in allowed_from) or (
                status not in CAMPAIGN_TRANSITIONS[current]
            ):
                raise StatusConflictError(
                    f"campaign {c.name!r} is {current}; it cannot become {status}",
                    current=current,
                    requested=status,
                )
            self._apply(c, status, message, now)
            s.flush()
            return self._record(s, c)

    def set_campaign_status(
        self, campaign: CampaignRef, status: str, message: str | None = None
    ) -> CampaignRecord:
        """:meth:`transition_campaign` without a ``from`` restriction (the transition table
        still applies)."""
        return self.transition_campaign(campaign, status, message)

    # ------------------------------------------------------------------ leases
    def acquire_lease(
        self,
        campaign: CampaignRef,
        *,
        token: str,
        host: str,
        pid: int,
        purpose: str,
        ttl_s: float,
        start_from: Collection[str] | None = None,
        message: str | None = None,
        process: str | None = None,
        take_over: str | None = None,
    ) -> CampaignRecord:
        """Take the campaign's lease and mark it ``running``, atomically.

        Refused with :class:`LeaseHeldError` (naming the holder: host, pid, purpose, since)
        while another token's lease is alive; the same token re-acquires (renews) its own.
        ``process`` identifies the holder beyond host and pid (see :class:`CampaignLease`).
        ``take_over`` is the token of a holder the caller has proven dead: its lease, still
        unexpired, is replaced in the same transaction — of two processes that both saw it
        dead, exactly one takes it over and the other is refused naming the new holder.
        ``start_from`` restricts the statuses a run may start from (a run queued by the API
        honours a pause or cancel issued before it started: :class:`StatusConflictError`);
        converged and cancelled campaigns never start."""
        check_nonempty(token, "lease token")
        if not ttl_s > 0:
            raise DatabaseInputError(f"lease ttl must be > 0 s, got {ttl_s!r}")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            now = self._db_now(s)
            row = self._lease_of(s, c.id)
            held = _lease(row, now) if row is not None else None
            if held is not None and held.alive and held.token not in (token, take_over):
                raise LeaseHeldError(
                    f"campaign {c.name!r} is held by {held.holder}; it runs there (wait for it, "
                    "or pause it with the API/dashboard)",
                    held,
                )
            if held is not None and held.token == token and c.status == "running":
                current = "running"  # re-acquired by its holder
            else:
                current = effective_status(c.status, held)
            if (start_from is not None and current not in start_from) or (
                "running" not in CAMPAIGN_TRANSITIONS[current]
            ):
                raise StatusConflictError(
                    f"campaign {c.name!r} is {current}; not started"
                    + (f" ({c.status_message})" if c.status_message else ""),
                    current=current,
                    requested="running",
                )
            self._apply(c, "running", message or f"running on {host} pid {pid} ({purpose})", now)
            expires = now + timedelta(seconds=ttl_s)
            if row is None:
                s.add(
                    CampaignLease(
                        campaign_id=c.id,
                        token=token,
                        host=host,
                        pid=pid,
                        process=process,
                        purpose=purpose,
                        acquired_at=now,
                        heartbeat_at=now,
                        expires_at=expires,
                    )
                )
            else:
                if row.token != token:
                    row.acquired_at = now
                row.token, row.host, row.pid, row.purpose = token, host, pid, purpose
                row.process = process
                row.heartbeat_at, row.expires_at = now, expires
            s.flush()
            return self._record(s, c)

    def renew_lease(self, campaign: CampaignRef, token: str, ttl_s: float) -> LeaseRecord | None:
        """Heartbeat: push the expiry of this token's lease ``ttl_s`` ahead. ``None`` when the
        lease is no longer this token's (taken over after it expired, or released): the caller
        has lost the campaign and must stop writing to it."""
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            now = self._db_now(s)
            res = s.execute(
                update(CampaignLease)
                .where(CampaignLease.campaign_id == c.id, CampaignLease.token == token)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl_s))
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                return None
            row = self._lease_of(s, c.id)
            s.refresh(row)
            return _lease(row, now)

    def release_lease(
        self,
        campaign: CampaignRef,
        token: str,
        *,
        status: str | None = None,
        message: str | None = None,
    ) -> CampaignRecord:
        """Give the lease back, setting the run's final status (``converged``, ``paused``,
        ``failed``, ``interrupted``, ``queued``...) in the same transaction — but only while the
        campaign is still ``running``: a pause or cancel a user sent meanwhile is kept. A token
        that no longer holds the lease changes nothing."""
        if status is not None:
            check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            now = self._db_now(s)
            row = self._lease_of(s, c.id)
            if row is None or row.token != token:
                return self._record(s, c)
            s.delete(row)
            s.flush()
            if status is not None and c.status == "running":
                if status not in CAMPAIGN_TRANSITIONS["running"]:
                    raise StatusConflictError(
                        f"campaign {c.name!r}: a run cannot end as {status}",
                        current="running",
                        requested=status,
                    )
                self._apply(c, status, message, now)
                s.flush()
            return self._record(s, c)

    def get_lease(self, campaign: CampaignRef) -> LeaseRecord | None:
        """The campaign's lease (alive, or the dead one of a holder that stopped), or ``None``."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            row = self._lease_of(s, c.id)
            return None if row is None else _lease(row, self._db_now(s))

    def holds_lease(self, campaign: CampaignRef, token: str) -> bool:
        """Whether ``token`` holds the campaign's lease and it has not expired."""
        lease = self.get_lease(campaign)
        return lease is not None and lease.token == token and lease.alive
