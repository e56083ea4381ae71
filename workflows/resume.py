"""A campaign run's bookkeeping around the steps: resume, step boundaries, the final decision.

The database is the source of truth for where a campaign stands, so a run resumes wherever the
last one stopped: a completed step (an ``iteration_steps`` row with ``completed_at``) is never
redone, finished walkers are not rerun, ``done`` labels are never recomputed, and the last
finished iteration's decision is re-evaluated before going on (a run killed after deciding to
stop stops). The run holds the campaign's lease (:mod:`workflows.lease`); at every step
boundary :meth:`CampaignRun.boundary` checks that it still holds it and whether a user paused
or cancelled the campaign (then the run stops there and says so). The label step stops
claiming new DFT work on a pause (:meth:`CampaignRun.stop_claiming`).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any

from .context import CampaignHandle, open_context
from .decide import Decision, evaluate
from .label import prepare_resume
from .progress import reporter

__all__ = ["CampaignRun"]


class _Stop(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.message)
        self.decision = decision


class CampaignRun:
    """One run of a campaign (a context manager: a stop at a boundary ends the ``with`` block
    and becomes :attr:`decision`).

    Args:
        handle: the campaign.
        lease: the :class:`workflows.lease.Lease` this run holds (checked at every boundary;
            ``None`` in tests that hold no lease).
        retry_failed: give failed labels that a rerun can fix a new round first.
        cap: run iterations only up to this index (exclusive; a scheduled run's share).
    """

    def __init__(
        self,
        handle: CampaignHandle,
        lease: Any = None,
        retry_failed: bool = False,
        cap: int | None = None,
    ) -> None:
        self.handle, self.lease, self.retry_failed = handle, lease, retry_failed
        self.ctx = open_context(handle)
        self.decision: Decision | None = None
        real = self.ctx.cfg.convergence.max_iterations
        self.cap = cap if cap is not None and cap < real else None

    def __enter__(self) -> CampaignRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, _Stop):
            reporter().message(exc.decision.message)
            self.decision = exc.decision
            return True
        return False

    def _requested_stop(self) -> Decision | None:
        rec = self.ctx.store.get_campaign(self.ctx.campaign_id)
        if rec.status in ("paused", "cancelled"):
            return Decision(True, rec.status, rec.status_message or rec.status)
        return None

    def boundary(self, where: str) -> None:
        """Stop here (end the ``with`` block) if the lease was lost or a user paused/cancelled."""
        if self.lease is not None:
            self.lease.check()
        d = self._requested_stop()
        if d is not None:
            raise _Stop(Decision(True, d.status, f"{d.message} (stopped {where})"))

    def stop_claiming(self) -> bool:
        """True when no new labels should be claimed: a pause, a cancel, the lease lost."""
        lost = self.lease is not None and self.lease.lost.is_set()
        return lost or self._requested_stop() is not None

    def resume(self) -> Decision | None:
        """Prepare a (re)start (:func:`workflows.label.prepare_resume`); the decision of the
        last finished iteration when it says stop (then nothing else is to run but its pending
        labels, :meth:`leftover_iteration`), else ``None``."""
        from .train import verified_model

        ctx = self.ctx
        prepare_resume(ctx, retry_failed=self.retry_failed)
        done = [i for i in ctx.store.list_iterations(ctx.campaign_id) if i.status == "done"]
        if not done:
            return None
        last = evaluate(ctx, done[-1])
        if not last.stop:
            return None
        final = ctx.store.latest_model(ctx.campaign_id)
        if final is not None:  # the committee users export: repaired if corrupt
            verified_model(ctx, final)
        self.decision = last
        return last

    def leftover_iteration(self) -> int | None:
        """After a stopping :meth:`resume`: the last iteration's id when labels are still
        pending (e.g. ``--retry-failed`` after the last iteration), else ``None``."""
        ctx = self.ctx
        if not ctx.store.count_labels(ctx.campaign_id)["pending"]:
            return None
        done = [i for i in ctx.store.list_iterations(ctx.campaign_id) if i.status == "done"]
        return done[-1].id if done else None

    def iterations(self) -> Iterator[Any]:
        """The iterations still to run (records with ``id`` and ``index``), each started in the
        database after a boundary check; none after a stopping :meth:`resume`."""
        if self.decision is not None:
            return
        ctx = self.ctx
        done = [i for i in ctx.store.list_iterations(ctx.campaign_id) if i.status == "done"]
        start = done[-1].index + 1 if done else 0
        for index in range(start, self.cap or ctx.cfg.convergence.max_iterations):
            self.boundary(f"before iteration {index}")
            yield ctx.store.start_iteration(ctx.campaign_id, index)

    def finished(self, decision: Decision) -> bool:
        """Record an iteration's decision; True when the campaign stops."""
        self.decision = decision
        return decision.stop

    def final(self) -> Decision:
        """The run's decision: the stopping one; ``queued`` when the run's ``cap`` ended it (the
        campaign continues at its next run); else the campaign's status."""
        if self.decision is not None and self.decision.stop:
            return self.decision
        if self.cap is not None:
            done = [
                i.index
                for i in self.ctx.store.list_iterations(self.ctx.campaign_id)
                if i.status == "done"
            ]
            if done and max(done) + 1 >= self.cap:
                real = self.ctx.cfg.convergence.max_iterations
                return Decision(
                    True,
                    "queued",
                    f"iteration {max(done)} done; the campaign continues at its next run "
                    f"(max_iterations={real})",
                )
        if self.decision is not None and self.lease is None:
            return self.decision
        rec = self.ctx.store.get_campaign(self.ctx.campaign_id)
        return Decision(True, rec.status, rec.status_message or "")
