"""Datasets: the training set of a campaign (done labels of its selected structures) and the
bulk import of labelled structures (seeding a campaign from files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, select

from .convert import CampaignRef, _chunks, _label, _structure
from .errors import DatabaseInputError
from .models import Label, Selection, Structure, utcnow
from .records import LabelledStructure, Origin, SelectionInput
from .repo_labels import LabelsRepo
from .validation import (
    check_atoms,
    check_energy,
    check_forces,
    check_json,
    check_nonempty,
    check_stress,
    label_mismatch,
)


def _source(origins: Sequence[Origin | None] | None, i: int) -> str:
    """Where input ``i`` came from: ``<file> frame <k>`` when the import said so."""
    info = (origins[i].info if origins and i < len(origins) and origins[i] else None) or {}
    if "file" in info:
        return f"{info['file']} frame {info.get('frame', '?')}"
    return f"structure {i}"


def _training_labels(query: Select, campaign_id: int, labeler: str, settings_hash: str) -> Select:
    """``query`` restricted to the campaign's training labels: ``done`` labels with this
    labeler and settings hash of the structures the campaign selected."""
    return query.join(
        Selection,
        and_(Selection.structure_id == Label.structure_id, Selection.campaign_id == campaign_id),
    ).where(Label.status == "done", Label.labeler == labeler, Label.settings_hash == settings_hash)


class DatasetsRepo(LabelsRepo):
    """Training sets and bulk import of labelled structures."""

    def training_set(
        self, campaign: CampaignRef, *, labeler: str, settings_hash: str
    ) -> list[LabelledStructure]:
        """All ``done`` labels with this labeler and settings hash of the structures the
        campaign selected (explored, seeded or requested), ordered by label id."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            # Core rows (no ORM identity map): two queries sharing one filter, joined here.
            labels = _training_labels(select(Label.__table__), c.id, labeler, settings_hash)
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
            q = _training_labels(select(Label.id), c.id, labeler, settings_hash)
            return np.asarray(list(s.scalars(q.order_by(Label.id))), dtype=np.int64)

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
        Everything is validated before anything is written. Two labels of one structure (in
        this call, or a stored ``done`` one for the same labeler and settings_hash) must agree
        within :func:`database.validation.label_mismatch`'s tolerances: equal ones merge (the
        stored / first one is kept), disagreeing ones raise :class:`DatabaseInputError` naming
        both sources. A stored non-done label is completed. Returns label ids in input order."""
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
            rows, seen = [], {}
            for i, (sid, (e, f, st)) in enumerate(zip(sids, clean, strict=True)):
                if sid in seen:
                    first = seen[sid]
                    why = label_mismatch(clean[first], (e, f, st))
                    if why:
                        raise DatabaseInputError(
                            f"two labels of one structure disagree ({why}): "
                            f"{_source(origins, first)} and {_source(origins, i)}"
                        )
                    continue  # equal: one label
                seen[sid] = i
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
            for chunk in _chunks(list(old.values())):
                for lb in s.scalars(select(Label).where(self._member(Label.id, chunk))):
                    given = seen[lb.structure_id]
                    if lb.status != "done":  # requested before, never computed: completed
                        r = by_sid[lb.structure_id]
                        lb.energy, lb.forces, lb.stress = r["energy"], r["forces"], r["stress"]
                        lb.status, lb.finished_at = "done", now
                        lb.failure_kind = lb.failure_message = None
                        continue
                    why = label_mismatch((lb.energy, lb.forces, lb.stress), clean[given])
                    if why:
                        raise DatabaseInputError(
                            f"a label disagrees with stored label {lb.id} of structure "
                            f"{lb.structure_id} ({labeler}, {settings_hash}) ({why}): "
                            f"{_source(origins, given)}"
                        )
            return [ids[i] for i in sids]
