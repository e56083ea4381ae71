"""Label outcomes: a claimed label's result or typed failure with every DFT run it took (one
``label_attempts`` row each), and requeueing (labels left running by a dead worker, failed labels
for a new round). Storing the same outcome twice is a no-op, so a retried commit is safe."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from .convert import CampaignRef, _attempt, _label
from .errors import LabelStateError, NotFoundError
from .models import CampaignLease, Label, LabelAttempt, Selection, Structure, utcnow
from .records import AttemptInput, LabelAttemptRecord, LabelRecord
from .store_base import StoreBase
from .validation import (
    check_energy,
    check_failure_kind,
    check_forces,
    check_json,
    check_nonempty,
    check_stress,
)


class LabelOutcomesRepo(StoreBase):
    """Results, failures and DFT attempts of labels; requeueing."""

    def _label_for_update(self, s: Session, label_id: int, worker: str | None) -> Label:
        lb = s.scalars(select(Label).where(Label.id == label_id).with_for_update()).one_or_none()
        if lb is None:
            raise NotFoundError(f"unknown label id {label_id}")
        if lb.status not in ("pending", "running"):
            raise LabelStateError(
                f"label {label_id} is {lb.status}; only pending or running labels take a result"
            )
        if worker is not None and lb.worker != worker:
            raise LabelStateError(f"label {label_id} is claimed by {lb.worker!r}, not {worker!r}")
        return lb

    def _record_attempts(
        self, s: Session, lb: Label, attempts: Sequence[AttemptInput] | None, host: str | None
    ) -> None:
        """Insert the DFT runs of this outcome (idempotent per label, round and attempt index)
        and set ``attempts`` to the number of runs recorded for the label."""
        rows = []
        now = utcnow()
        for a in attempts or ():
            rows.append(
                {
                    "label_id": lb.id,
                    "retry_round": lb.retry_round,
                    "attempt": int(a.attempt),
                    "status": check_nonempty(a.status, "attempt status"),
                    "message": a.message,
                    "wall_time": a.wall_time,
                    "settings": check_json(dict(a.settings), "attempt settings"),
                    "settings_changes": check_json(dict(a.settings_changes), "attempt changes"),
                    "workdir": a.workdir,
                    "host": a.host or host,
                    "created_at": now,
                }
            )
        if rows:
            stmt = self._insert(LabelAttempt).on_conflict_do_nothing(
                index_elements=["label_id", "retry_round", "attempt"]
            )
            s.execute(stmt, rows)
        s.flush()
        lb.attempts = s.scalar(
            select(func.count()).select_from(LabelAttempt).where(LabelAttempt.label_id == lb.id)
        )

    def _same_result(self, s: Session, label_id: int, energy: float) -> Label | None:
        """The label when it is already ``done`` with this energy (a retried commit whose first
        try went through), else ``None``."""
        lb = s.get(Label, label_id)
        if lb is not None and lb.status == "done" and lb.energy == energy:
            return lb
        return None

    def store_result(
        self,
        label_id: int,
        *,
        energy: float,
        forces: Any,
        stress: Any = None,
        wall_time: float | None = None,
        host: str | None = None,
        worker: str | None = None,
        attempts: Sequence[AttemptInput] | None = None,
        code_version: str | None = None,
        effective_settings: dict[str, Any] | None = None,
        effective_settings_hash: str | None = None,
    ) -> LabelRecord:
        """Store a successful calculation: energy (eV), forces (N,3) eV/Å, optional stress
        (Voigt (6,) or (3,3), eV/Å^3), the DFT runs it took (``attempts``, one
        :class:`LabelAttempt` row each), the code version and the settings actually used.
        Validated first; the label becomes ``done``. With ``worker``, refuse
        (:class:`LabelStateError`) unless that worker holds the claim (a label requeued and
        claimed by another worker meanwhile). Storing the same result again is a no-op."""
        energy = check_energy(energy, f"label {label_id}: energy")
        stress = check_stress(stress, f"label {label_id}: stress")
        if wall_time is not None:
            wall_time = check_energy(wall_time, f"label {label_id}: wall_time")
        if effective_settings is not None:
            effective_settings = check_json(effective_settings, "effective settings")
        with self.session() as s:
            same = self._same_result(s, label_id, energy)
            if same is not None:
                return _label(same)
            lb = self._label_for_update(s, label_id, worker)
            natoms = s.scalar(select(Structure.natoms).where(Structure.id == lb.structure_id))
            lb.forces = check_forces(forces, natoms, f"label {label_id}: forces")
            lb.energy = energy
            lb.stress = stress
            lb.status = "done"
            lb.failure_kind = lb.failure_message = None
            lb.wall_time = wall_time
            lb.host = host
            lb.code_version = code_version
            lb.effective_settings = effective_settings
            lb.effective_settings_hash = effective_settings_hash
            lb.finished_at = utcnow()
            self._record_attempts(s, lb, attempts, host)
            s.flush()
            return _label(lb)

    def store_failure(
        self,
        label_id: int,
        *,
        kind: str,
        message: str = "",
        wall_time: float | None = None,
        host: str | None = None,
        worker: str | None = None,
        attempts: Sequence[AttemptInput] | None = None,
        code_version: str | None = None,
    ) -> LabelRecord:
        """Record a failed calculation (kind: scf_unconverged / crashed / timeout /
        invalid_input / missing_executable / other, with the code's own message) and the DFT
        runs it took; the label becomes ``failed``. ``worker``: as in :meth:`store_result`."""
        check_failure_kind(kind)
        if wall_time is not None:
            wall_time = check_energy(wall_time, f"label {label_id}: wall_time")
        with self.session() as s:
            lb = self._label_for_update(s, label_id, worker)
            lb.status = "failed"
            lb.failure_kind = kind
            lb.failure_message = message
            lb.energy = lb.forces = lb.stress = None
            lb.wall_time = wall_time
            lb.host = host
            lb.code_version = code_version
            lb.finished_at = utcnow()
            self._record_attempts(s, lb, attempts, host)
            s.flush()
            return _label(lb)

    def list_label_attempts(self, label_id: int) -> list[LabelAttemptRecord]:
        """Every DFT run recorded for a label, by round and attempt index."""
        with self.session(write=False) as s:
            q = (
                select(LabelAttempt)
                .where(LabelAttempt.label_id == label_id)
                .order_by(LabelAttempt.retry_round, LabelAttempt.attempt)
            )
            return [_attempt(a) for a in s.scalars(q)]

    def count_label_attempts(self, campaign: CampaignRef) -> dict[str, int]:
        """DFT runs of the campaign's labels by outcome (``ok`` or failure kind)."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            q = (
                select(LabelAttempt.status, func.count())
                .join(Label, Label.id == LabelAttempt.label_id)
                .where(Label.campaign_id == c.id)
                .group_by(LabelAttempt.status)
            )
            return dict(s.execute(q).all())

    def requeue_running(
        self, campaign: CampaignRef | None = None, *, older_than: timedelta | None = None
    ) -> int:
        """Reset ``running`` labels (e.g. left by a killed worker) to ``pending``; only those
        claimed more than ``older_than`` ago if given. Returns how many."""
        with self.session() as s:
            q = update(Label).where(Label.status == "running")
            if campaign is not None:
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            if older_than is not None:
                q = q.where(Label.claimed_at < utcnow() - older_than)
            res = s.execute(
                q.values(status="pending", worker=None, claimed_at=None).execution_options(
                    synchronize_session=False
                )
            )
            return res.rowcount

    def running_selected_labels(self, campaign: CampaignRef) -> list[LabelRecord]:
        """``running`` labels of structures the campaign selected, whoever claimed them (a
        label is shared by every campaign that selected its structure)."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            sel = select(Selection.structure_id).where(Selection.campaign_id == c.id)
            q = (
                select(Label)
                .where(Label.status == "running", Label.structure_id.in_(sel))
                .order_by(Label.id)
            )
            return [_label(lb) for lb in s.scalars(q)]

    def requeue_stranded(self, campaign: CampaignRef, *, worker: str) -> int:
        """Back to ``pending``: the campaign's ``running`` labels that nobody computes any more
        — claimed by ``worker`` (the caller, which has nothing in flight: a claim whose commit
        was retried), or requested by a campaign that no live process holds (its run died).
        Labels computed right now by another campaign's live run are left to it. Returns how
        many."""
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            now = self._db_now(s)
            live = select(CampaignLease.campaign_id).where(CampaignLease.expires_at > now)
            sel = select(Selection.structure_id).where(Selection.campaign_id == c.id)
            res = s.execute(
                update(Label)
                .where(
                    Label.status == "running",
                    Label.structure_id.in_(sel),
                    or_(
                        Label.worker == worker,
                        Label.campaign_id.is_(None),
                        Label.campaign_id.not_in(live),
                    ),
                )
                .values(status="pending", worker=None, claimed_at=None)
                .execution_options(synchronize_session=False)
            )
            return res.rowcount

    def requeue_failed(
        self,
        campaign: CampaignRef | None = None,
        *,
        kinds: Iterable[str] | None = None,
        skip_kinds: Iterable[str] = ("invalid_input",),
        max_attempts: int | None = None,
    ) -> int:
        """Send ``failed`` labels back to ``pending`` for a new round of DFT runs (optionally
        only some failure kinds, and only those run fewer than ``max_attempts`` times).
        ``skip_kinds`` (default ``invalid_input``: the same input fails the same way) stay
        failed. The history is kept: every earlier run stays a :class:`LabelAttempt` row, and
        ``retry_round`` goes up so the next outcome lands in a new directory. Returns how many
        were requeued."""
        skip = [check_failure_kind(k) for k in skip_kinds]
        with self.session() as s:
            q = update(Label).where(Label.status == "failed")
            if campaign is not None:
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            if kinds is not None:
                q = q.where(Label.failure_kind.in_([check_failure_kind(k) for k in kinds]))
            if skip:
                q = q.where(Label.failure_kind.not_in(skip))
            if max_attempts is not None:
                q = q.where(Label.attempts < max_attempts)
            res = s.execute(
                q.values(
                    status="pending",
                    worker=None,
                    claimed_at=None,
                    failure_kind=None,
                    failure_message=None,
                    retry_round=Label.retry_round + 1,
                ).execution_options(synchronize_session=False)
            )
            return res.rowcount
