"""Exploration progress as rows: finished walkers and the frames they offer for labelling.

Each walker of an iteration is one ``walker_runs`` row, unique per (iteration, walker index),
written in one transaction with the structures and ``candidates`` rows of the frames it offers.
Walkers that finish at the same moment therefore never overwrite each other (they insert
different rows), and a walker killed before its transaction committed left nothing behind (it
is simply run again).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select

from .convert import _candidate, _walker_run
from .errors import DatabaseInputError
from .models import WALKER_STATUSES, Candidate, WalkerRun, utcnow
from .records import CandidateRecord, WalkerOutcome, WalkerRunRecord
from .repo_structures import StructuresRepo
from .validation import check_choice

__all__ = ["ProgressRepo"]


def _finite_or_none(x: float | None, what: str) -> float | None:
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        raise DatabaseInputError(f"{what} must be finite, got {x}")
    return x


class ProgressRepo(StructuresRepo):
    """Walker runs and candidate frames of an iteration."""

    def record_walker_run(self, iteration_id: int, outcome: WalkerOutcome) -> WalkerRunRecord:
        """Store a finished walker with the frames it offers, in one transaction: the offered
        structures (deduplicated, with their MD origin), the ``walker_runs`` row and one
        ``candidates`` row per offered frame.

        Idempotent per (iteration, walker): if the walker was already recorded (e.g. by a run
        that was killed after the commit), the stored row is returned and nothing changes.
        ``outcome.max_force_devs``: (n_frames,) eV/Å, NaN allowed for non-finite deviations;
        offers: ``(atoms, Origin, uncertainty, max_force_dev_eV_per_A, cut)``."""
        check_choice(outcome.status, WALKER_STATUSES, "walker status")
        if not isinstance(outcome.walker, int) or outcome.walker < 0:
            raise DatabaseInputError(f"walker index must be an int >= 0, got {outcome.walker!r}")
        devs = None
        if outcome.max_force_devs is not None:
            devs = np.asarray(outcome.max_force_devs, dtype=np.float64).reshape(-1)
        offers = list(outcome.offers)
        for i, offer in enumerate(offers):
            _finite_or_none(offer[2], f"offer {i}: uncertainty")
            _finite_or_none(offer[3], f"offer {i}: max_force_dev")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            existing = self._walker_row(s, iteration_id, outcome.walker)
            if existing is not None:
                return _walker_run(existing)
            sids = (
                self._add_structures(
                    s,
                    [o[0] for o in offers],
                    campaign=it.campaign_id,
                    iteration_id=iteration_id,
                    origins=[o[1] for o in offers],
                    source="md",
                )
                if offers
                else []
            )
            row = {
                "iteration_id": iteration_id,
                "walker": outcome.walker,
                "status": outcome.status,
                "model_id": outcome.model_id,
                "temperature": outcome.temperature,
                "pressure": outcome.pressure,
                "ensemble": outcome.ensemble,
                "seed": outcome.seed,
                "n_frames": int(outcome.n_frames),
                "n_accurate": int(outcome.n_accurate),
                "n_candidate": int(outcome.n_candidate),
                "n_failed": int(outcome.n_failed),
                "stopped_early": bool(outcome.stopped_early),
                "stop_reason": outcome.stop_reason,
                "error": outcome.error,
                "md_wall_s": outcome.md_wall_s,
                "max_force_devs": devs,
                "host": outcome.host,
                "finished_at": utcnow(),
            }
            new = self._insert_new(s, WalkerRun, [row], ["iteration_id", "walker"], "walker")
            if not new:  # another process recorded this walker a moment ago
                return _walker_run(self._walker_row(s, iteration_id, outcome.walker))
            run_id = new[outcome.walker]
            cands, seen = [], set()
            for sid, offer in zip(sids, offers, strict=True):
                if sid in seen:
                    continue
                seen.add(sid)
                origin = offer[1]
                cands.append(
                    {
                        "walker_run_id": run_id,
                        "iteration_id": iteration_id,
                        "structure_id": sid,
                        "uncertainty": float(offer[2]),
                        "max_force_dev": float(offer[3]),
                        "md_step": getattr(origin, "md_step", None),
                        "cut": bool(offer[4]),
                    }
                )
            if cands:
                s.execute(self._insert(Candidate), cands)
            return _walker_run(self._walker_row(s, iteration_id, outcome.walker))

    def discard_failed_walker_runs(self, iteration_id: int) -> int:
        """Delete the iteration's ``failed`` walker rows so the walkers run again (an explore
        step rerun by the campaign's lease holder). Returns how many."""
        with self.session() as s:
            self._iteration_row(s, iteration_id)
            rows = list(
                s.scalars(
                    select(WalkerRun).where(
                        WalkerRun.iteration_id == iteration_id, WalkerRun.status == "failed"
                    )
                )
            )
            for row in rows:
                s.delete(row)
            return len(rows)

    @staticmethod
    def _walker_row(s, iteration_id: int, walker: int) -> WalkerRun | None:
        return s.scalars(
            select(WalkerRun).where(
                WalkerRun.iteration_id == iteration_id, WalkerRun.walker == walker
            )
        ).one_or_none()

    def list_walker_runs(self, iteration_id: int) -> list[WalkerRunRecord]:
        """The iteration's finished walkers, by walker index."""
        with self.session(write=False) as s:
            self._iteration_row(s, iteration_id)
            q = (
                select(WalkerRun)
                .where(WalkerRun.iteration_id == iteration_id)
                .order_by(WalkerRun.walker)
            )
            return [_walker_run(w) for w in s.scalars(q)]

    def list_candidates(
        self, iteration_id: int, *, walkers: Sequence[int] | None = None
    ) -> list[CandidateRecord]:
        """The frames the iteration's walkers offered (optionally of some walkers), ordered by
        walker and id."""
        with self.session(write=False) as s:
            self._iteration_row(s, iteration_id)
            q = (
                select(Candidate)
                .join(WalkerRun, WalkerRun.id == Candidate.walker_run_id)
                .where(Candidate.iteration_id == iteration_id)
                .order_by(WalkerRun.walker, Candidate.id)
            )
            if walkers is not None:
                q = q.where(WalkerRun.walker.in_([int(w) for w in walkers]))
            return [_candidate(c) for c in s.scalars(q)]
