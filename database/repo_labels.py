"""Labels: request, atomic claim, results and failures, requeue, training sets, bulk import."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from .convert import (
    CampaignRef,
    _chunks,
    _label,
    _structure,
)
from .errors import (
    DatabaseInputError,
    LabelStateError,
    NotFoundError,
)
from .models import (
    LABEL_STATUSES,
    Label,
    Selection,
    Structure,
    utcnow,
)
from .records import (
    LabelledStructure,
    LabelRecord,
    LabelTask,
    Origin,
    SelectionInput,
)
from .repo_structures import StructuresRepo
from .validation import (
    check_atoms,
    check_choice,
    check_energy,
    check_failure_kind,
    check_forces,
    check_json,
    check_nonempty,
    check_stress,
)


class LabelsRepo(StructuresRepo):
    """Labels: request, atomic claim, results and failures, requeue, training sets, bulk import."""

    # ------------------------------------------------------------------ labels
    def request_labels(
        self,
        campaign: CampaignRef,
        structure_ids: Sequence[int],
        *,
        labeler: str,
        settings_hash: str,
        labeler_version: str = "",
        settings: dict[str, Any] | None = None,
        iteration_id: int | None = None,
    ) -> list[int]:
        """Create ``pending`` labels for structures (idempotent: the unique key is
        (structure, labeler, settings_hash), so an existing label of any status is returned
        instead of a new one). Structures not yet selected by the campaign get a selection
        with reason ``requested``. Returns label ids in input order."""
        check_nonempty(labeler, "labeler")
        check_nonempty(settings_hash, "settings_hash")
        settings = check_json(settings or {}, "labeler settings")
        sids = [int(i) for i in structure_ids]
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            self._check_structures_exist(s, sids)
            self._record_selections(
                s, c.id, [SelectionInput(i, reason="requested") for i in sids], iteration_id
            )
            now = utcnow()
            rows = [
                {
                    "structure_id": i,
                    "campaign_id": c.id,
                    "iteration_id": iteration_id,
                    "labeler": labeler,
                    "labeler_version": labeler_version,
                    "settings_hash": settings_hash,
                    "settings": settings,
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                }
                for i in dict.fromkeys(sids)
            ]
            ids = self._insert_new(
                s, Label, rows, ["structure_id", "labeler", "settings_hash"], "structure_id"
            )
            existing = [i for i in dict.fromkeys(sids) if i not in ids]
            ids.update(self._label_ids(s, existing, labeler, settings_hash))
            return [ids[i] for i in sids]

    def _label_ids(
        self, s: Session, structure_ids: Sequence[int], labeler: str, settings_hash: str
    ) -> dict[int, int]:
        out: dict[int, int] = {}
        for chunk in _chunks(list(dict.fromkeys(structure_ids))):
            q = select(Label.structure_id, Label.id).where(
                Label.labeler == labeler,
                Label.settings_hash == settings_hash,
                self._member(Label.structure_id, chunk),
            )
            out.update(s.execute(q).all())
        return out

    def claim_labels(
        self,
        *,
        limit: int = 1,
        labeler: str | None = None,
        settings_hash: str | None = None,
        campaign: CampaignRef | None = None,
        worker: str | None = None,
    ) -> list[LabelTask]:
        """Atomically move up to ``limit`` ``pending`` labels (oldest first) to ``running``
        and return them. Two concurrent callers never get the same label: PostgreSQL uses
        ``SELECT ... FOR UPDATE SKIP LOCKED``, SQLite a ``BEGIN IMMEDIATE`` transaction.
        ``attempts`` is incremented; ``worker`` defaults to ``host:pid``."""
        if limit < 1:
            raise DatabaseInputError(f"limit must be >= 1, got {limit}")
        worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        with self.session() as s:
            q = select(Label.id).where(Label.status == "pending")
            if labeler is not None:
                q = q.where(Label.labeler == labeler)
            if settings_hash is not None:
                q = q.where(Label.settings_hash == settings_hash)
            if campaign is not None:
                # a label is shared by every campaign that selected its structure (the
                # label row names the first requester only)
                cid = self._campaign_row(s, campaign).id
                selected = select(Selection.structure_id).where(Selection.campaign_id == cid)
                q = q.where(or_(Label.campaign_id == cid, Label.structure_id.in_(selected)))
            q = q.order_by(Label.id).limit(limit).with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            if not ids:
                return []
            # The status guard + RETURNING make the claim safe even without the row locks.
            ids = list(
                s.scalars(
                    update(Label)
                    .where(Label.id.in_(ids), Label.status == "pending")
                    .values(
                        status="running",
                        worker=worker,
                        claimed_at=utcnow(),
                        attempts=Label.attempts + 1,
                    )
                    .returning(Label.id)
                    .execution_options(synchronize_session=False)
                )
            )
            rows = s.execute(
                select(Label, Structure)
                .join(Structure, Structure.id == Label.structure_id)
                .where(Label.id.in_(ids))
                .order_by(Label.id)
            ).all()
            return [
                LabelTask(
                    lb.id,
                    lb.structure_id,
                    lb.labeler,
                    lb.labeler_version,
                    lb.settings_hash,
                    dict(lb.settings or {}),
                    lb.attempts,
                    _structure(st).to_atoms(),
                )
                for lb, st in rows
            ]

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
    ) -> LabelRecord:
        """Store a successful calculation: energy (eV), forces (N,3) eV/Å, optional stress
        (Voigt (6,) or (3,3), eV/Å^3). Validated first; the label becomes ``done``. With
        ``worker``, refuse (:class:`LabelStateError`) unless that worker holds the claim (a
        label requeued and claimed by another worker meanwhile)."""
        energy = check_energy(energy, f"label {label_id}: energy")
        stress = check_stress(stress, f"label {label_id}: stress")
        if wall_time is not None:
            wall_time = check_energy(wall_time, f"label {label_id}: wall_time")
        with self.session() as s:
            lb = self._label_for_update(s, label_id, worker)
            natoms = s.scalar(select(Structure.natoms).where(Structure.id == lb.structure_id))
            lb.forces = check_forces(forces, natoms, f"label {label_id}: forces")
            lb.energy = energy
            lb.stress = stress
            lb.status = "done"
            lb.failure_kind = lb.failure_message = None
            lb.wall_time = wall_time
            lb.host = host
            lb.finished_at = utcnow()
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
    ) -> LabelRecord:
        """Record a failed calculation (kind: scf_unconverged / crashed / timeout /
        invalid_input / missing_executable / other, with the code's own message); the label becomes ``failed``.
        ``worker``: as in :meth:`store_result`."""
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
            lb.finished_at = utcnow()
            s.flush()
            return _label(lb)

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

    def requeue_failed(
        self,
        campaign: CampaignRef | None = None,
        *,
        kinds: Iterable[str] | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Reset ``failed`` labels (optionally only some failure kinds, and only those tried
        fewer than ``max_attempts`` times) to ``pending``. Returns how many."""
        with self.session() as s:
            q = update(Label).where(Label.status == "failed")
            if campaign is not None:
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            if kinds is not None:
                q = q.where(Label.failure_kind.in_([check_failure_kind(k) for k in kinds]))
            if max_attempts is not None:
                q = q.where(Label.attempts < max_attempts)
            res = s.execute(
                q.values(
                    status="pending",
                    worker=None,
                    claimed_at=None,
                    failure_kind=None,
                    failure_message=None,
                ).execution_options(synchronize_session=False)
            )
            return res.rowcount

    def get_label(self, label_id: int) -> LabelRecord:
        """A label by id; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            lb = s.get(Label, label_id)
            if lb is None:
                raise NotFoundError(f"unknown label id {label_id}")
            return _label(lb)

    def list_labels(
        self,
        campaign: CampaignRef | None = None,
        *,
        status: str | None = None,
        iteration_id: int | None = None,
        offset: int = 0,
        limit: int | None = 100,
    ) -> list[LabelRecord]:
        """Labels requested by a campaign (or all), filtered by status / iteration, by id,
        one page at a time."""
        if status is not None:
            check_choice(status, LABEL_STATUSES, "label status")
        with self.session(write=False) as s:
            q = select(Label).order_by(Label.id)
            if campaign is not None:
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            if status is not None:
                q = q.where(Label.status == status)
            if iteration_id is not None:
                q = q.where(Label.iteration_id == iteration_id)
            return [_label(lb) for lb in s.scalars(q.offset(offset).limit(limit))]

    def count_labels(self, campaign: CampaignRef | None = None) -> dict[str, int]:
        """Number of labels by status (every status present as a key)."""
        with self.session(write=False) as s:
            q = select(Label.status, func.count()).group_by(Label.status)
            if campaign is not None:
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            counts = dict(s.execute(q).all())
        return {st: counts.get(st, 0) for st in LABEL_STATUSES}

    def training_set(
        self, campaign: CampaignRef, *, labeler: str, settings_hash: str
    ) -> list[LabelledStructure]:
        """All ``done`` labels with this labeler and settings hash of the structures the
        campaign selected (explored, seeded or requested), ordered by label id."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            # Core rows (no ORM identity map): two queries sharing one filter, joined here.
            labels = (
                select(Label.__table__)
                .join(
                    Selection,
                    and_(
                        Selection.structure_id == Label.structure_id, Selection.campaign_id == c.id
                    ),
                )
                .where(
                    Label.status == "done",
                    Label.labeler == labeler,
                    Label.settings_hash == settings_hash,
                )
            )
            label_rows = s.execute(labels.order_by(Label.id)).all()
            sub = labels.with_only_columns(Label.structure_id).scalar_subquery()
            structures = {
                row.id: _structure(row)
                for row in s.execute(select(Structure.__table__).where(Structure.id.in_(sub)))
            }
            return [LabelledStructure(_label(lb), structures[lb.structure_id]) for lb in label_rows]

    def training_label_ids(
        self, campaign: CampaignRef, *, labeler: str, settings_hash: str
    ) -> np.ndarray:
        """Ids (int64, ascending) of the labels :meth:`training_set` would return."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            q = (
                select(Label.id)
                .join(
                    Selection,
                    and_(
                        Selection.structure_id == Label.structure_id, Selection.campaign_id == c.id
                    ),
                )
                .where(
                    Label.status == "done",
                    Label.labeler == labeler,
                    Label.settings_hash == settings_hash,
                )
                .order_by(Label.id)
            )
            return np.asarray(list(s.scalars(q)), dtype=np.int64)

    def add_labelled(
        self,
        campaign: CampaignRef,
        atoms_list: Sequence[Any],
        *,
        energies: Sequence[float],
        forces: Sequence[Any],
        stresses: Sequence[Any | None] | None = None,
        labeler: str,
        settings_hash: str,
        labeler_version: str = "",
        settings: dict[str, Any] | None = None,
        iteration_id: int | None = None,
        source: str = "import",
        reason: str = "seed",
        origins: Sequence[Origin | None] | None = None,
    ) -> list[int]:
        """Store already labelled structures in one transaction (import / seeding / bulk):
        structures (deduplicated), selections into the campaign and ``done`` labels.
        Everything is validated before anything is written; an existing ``done`` label for
        the same (structure, labeler, settings_hash) is kept, a non-done one is completed.
        Returns label ids in input order."""
        n = len(atoms_list)
        if len(energies) != n or len(forces) != n or (stresses is not None and len(stresses) != n):
            raise DatabaseInputError(
                f"got {n} structures but {len(energies)} energies, "
                f"{len(forces)} forces"
                + (f", {len(stresses)} stresses" if stresses is not None else "")
            )
        check_nonempty(labeler, "labeler")
        check_nonempty(settings_hash, "settings_hash")
        settings = check_json(settings or {}, "labeler settings")
        clean = []
        for i, atoms in enumerate(atoms_list):
            check_atoms(atoms, f"structure {i}")
            clean.append(
                (
                    check_energy(energies[i], f"structure {i}: energy"),
                    check_forces(forces[i], len(atoms), f"structure {i}: forces"),
                    check_stress(
                        stresses[i] if stresses is not None else None, f"structure {i}: stress"
                    ),
                )
            )
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            sids = self._add_structures(
                s,
                atoms_list,
                campaign=c.id,
                iteration_id=iteration_id,
                origins=origins,
                source=source,
            )
            self._record_selections(
                s, c.id, [SelectionInput(i, reason=reason) for i in sids], iteration_id
            )
            now = utcnow()
            rows, seen = [], set()
            for sid, (e, f, st) in zip(sids, clean, strict=True):
                if sid in seen:
                    continue
                seen.add(sid)
                rows.append(
                    {
                        "structure_id": sid,
                        "campaign_id": c.id,
                        "iteration_id": iteration_id,
                        "labeler": labeler,
                        "labeler_version": labeler_version,
                        "settings_hash": settings_hash,
                        "settings": settings,
                        "status": "done",
                        "energy": e,
                        "forces": f,
                        "stress": st,
                        "attempts": 0,
                        "created_at": now,
                        "finished_at": now,
                        "host": None,
                    }
                )
            ids = self._insert_new(
                s, Label, rows, ["structure_id", "labeler", "settings_hash"], "structure_id"
            )
            existing = [i for i in dict.fromkeys(sids) if i not in ids]
            old = self._label_ids(s, existing, labeler, settings_hash)
            ids.update(old)
            by_sid = {r["structure_id"]: r for r in rows}
            not_done = []
            for chunk in _chunks(list(old.values())):
                q = select(Label).where(self._member(Label.id, chunk), Label.status != "done")
                not_done += list(s.scalars(q))
            for lb in not_done:
                r = by_sid[lb.structure_id]
                lb.energy, lb.forces, lb.stress = r["energy"], r["forces"], r["stress"]
                lb.status, lb.finished_at = "done", now
                lb.failure_kind = lb.failure_message = None
            return [ids[i] for i in sids]
