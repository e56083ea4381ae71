"""Labels: request, atomic claim, the select/seed step in one transaction, listing (training
sets and bulk import: :mod:`database.repo_datasets`; outcomes and requeueing:
:mod:`database.repo_outcomes`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from .convert import (
    CampaignRef,
    _chunks,
    _label,
    _structure,
)
from .errors import (
    DatabaseInputError,
    NotFoundError,
)
from .models import (
    LABEL_STATUSES,
    IterationDrop,
    Label,
    Selection,
    Structure,
    utcnow,
)
from .records import (
    LabelRecord,
    LabelTask,
    SelectionInput,
)
from .repo_structures import StructuresRepo
from .validation import (
    check_choice,
    check_json,
    check_nonempty,
)


class LabelsRepo(StructuresRepo):
    """Labels: request, atomic claim, the select/seed step in one transaction, listing."""

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
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            return self._request_labels(
                s,
                c.id,
                structure_ids,
                labeler=labeler,
                settings_hash=settings_hash,
                labeler_version=labeler_version,
                settings=settings,
                iteration_id=iteration_id,
            )

    def _request_labels(
        self,
        s: Session,
        campaign_id: int,
        structure_ids: Sequence[int],
        *,
        labeler: str,
        settings_hash: str,
        labeler_version: str,
        settings: dict[str, Any] | None,
        iteration_id: int | None,
    ) -> list[int]:
        check_nonempty(labeler, "labeler")
        check_nonempty(settings_hash, "settings_hash")
        settings = check_json(settings or {}, "labeler settings")
        sids = [int(i) for i in structure_ids]
        self._check_structures_exist(s, sids)
        self._record_selections(
            s, campaign_id, [SelectionInput(i, reason="requested") for i in sids], iteration_id
        )
        now = utcnow()
        rows = [
            {
                "structure_id": i,
                "campaign_id": campaign_id,
                "iteration_id": iteration_id,
                "labeler": labeler,
                "labeler_version": labeler_version,
                "settings_hash": settings_hash,
                "settings": settings,
                "status": "pending",
                "attempts": 0,
                "claims": 0,
                "retry_round": 0,
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

    def record_picks(
        self,
        campaign: CampaignRef,
        iteration_id: int,
        selections: Sequence[SelectionInput],
        *,
        step: str,
        labeler: str,
        settings_hash: str,
        labeler_version: str = "",
        settings: dict[str, Any] | None = None,
        seconds: float = 0.0,
        dropped: Mapping[str, int] | None = None,
    ) -> list[int]:
        """A select (or seed) step in one transaction: the selections, a ``pending`` label for
        each selected structure, the frames its filters ``dropped`` (reason -> count, > 0
        kept; :class:`IterationDrop` rows) and ``step`` marked completed with ``seconds`` of
        wall time. A run killed during the step left nothing of it; a rerun after it finds it
        complete. Returns the label ids in input order."""
        drops = {str(k): int(n) for k, n in (dropped or {}).items() if n}
        for reason, n in drops.items():
            if n < 0 or not reason or len(reason) > 200:
                raise DatabaseInputError(f"dropped count {reason!r}: {n} is not a count")
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            s.add_all(
                IterationDrop(iteration_id=iteration_id, step=step, reason=r, count=n)
                for r, n in drops.items()
            )
            self._record_selections(s, c.id, selections, iteration_id)
            ids = self._request_labels(
                s,
                c.id,
                [x.structure_id for x in selections],
                labeler=labeler,
                settings_hash=settings_hash,
                labeler_version=labeler_version,
                settings=settings,
                iteration_id=iteration_id,
            )
            self._add_step(s, iteration_id, step, float(seconds), True)
            return ids

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
        ``claims`` is incremented (``attempts`` counts DFT runs, recorded with the outcome);
        ``worker`` (the claim's owner, checked when the outcome is stored) defaults to
        ``host:pid``."""
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
                        claims=Label.claims + 1,
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
                    lb.retry_round,
                    lb.worker,
                )
                for lb, st in rows
            ]

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
