"""Structures (deduplicated by canonical hash) and selections into campaigns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from .convert import (
    CampaignRef,
    _chunks,
    _selection,
    _structure,
    _structure_row,
)
from .errors import (
    DatabaseInputError,
    NotFoundError,
)
from .hashing import atoms_hash
from .models import (
    Selection,
    Structure,
    utcnow,
)
from .records import (
    Origin,
    SelectionInput,
    SelectionRecord,
    StructureRecord,
)
from .store_base import StoreBase
from .validation import (
    check_atoms,
    check_energy,
    check_nonempty,
)


class StructuresRepo(StoreBase):
    """Structures (deduplicated by canonical hash) and selections into campaigns."""

    # ------------------------------------------------------------------ structures
    def add_structures(
        self,
        atoms_list: Sequence[Any],
        *,
        campaign: CampaignRef | None = None,
        iteration_id: int | None = None,
        origins: Sequence[Origin | None] | None = None,
        source: str = "md",
    ) -> list[int]:
        """Store structures (``ase.Atoms``), deduplicated by canonical hash, and return their
        ids in input order (an already stored structure returns its existing id and keeps its
        first origin)."""
        with self.session() as s:
            return self._add_structures(
                s,
                atoms_list,
                campaign=campaign,
                iteration_id=iteration_id,
                origins=origins,
                source=source,
            )

    def _add_structures(
        self, s: Session, atoms_list: Sequence[Any], *, campaign, iteration_id, origins, source
    ) -> list[int]:
        if origins is not None and len(origins) != len(atoms_list):
            raise DatabaseInputError(f"got {len(origins)} origins for {len(atoms_list)} structures")
        for i, atoms in enumerate(atoms_list):
            check_atoms(atoms, f"structure {i}")
        campaign_id = self._campaign_row(s, campaign).id if campaign is not None else None
        if iteration_id is not None:
            self._iteration_row(s, iteration_id, campaign_id)
        now = utcnow()
        rows = [
            _structure_row(
                a,
                origins[i] if origins else None,
                source=source,
                campaign_id=campaign_id,
                iteration_id=iteration_id,
                now=now,
            )
            for i, a in enumerate(atoms_list)
        ]
        hashes = [r["hash"] for r in rows]
        unique = list({r["hash"]: r for r in reversed(rows)}.values())[::-1]  # first wins
        ids = self._insert_new(s, Structure, unique, ["hash"], "hash")
        existing = [h for h in dict.fromkeys(hashes) if h not in ids]
        if existing:
            ids.update(self._ids_for_hashes(s, existing))
        return [ids[h] for h in hashes]

    def _ids_for_hashes(self, s: Session, hashes: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(list(dict.fromkeys(hashes))):
            q = select(Structure.hash, Structure.id).where(self._member(Structure.hash, chunk))
            out.update(s.execute(q).all())
        return out

    def add_structure(self, atoms: Any, **kwargs: Any) -> int:
        """Store one structure (see :meth:`add_structures`; ``origin=`` for one origin)."""
        origin = kwargs.pop("origin", None)
        return self.add_structures([atoms], origins=[origin], **kwargs)[0]

    def find_structure(self, atoms: Any) -> int | None:
        """Id of the stored structure with the same canonical hash, or ``None``."""
        check_atoms(atoms)
        h = atoms_hash(atoms)
        with self.session(write=False) as s:
            return s.scalar(select(Structure.id).where(Structure.hash == h))

    def get_structure(self, structure_id: int) -> StructureRecord:
        """A structure by id; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            st = s.get(Structure, structure_id)
            if st is None:
                raise NotFoundError(f"unknown structure id {structure_id}")
            return _structure(st)

    def get_structures(self, structure_ids: Sequence[int]) -> list[StructureRecord]:
        """Structures by id, in the order given."""
        ids = [int(i) for i in structure_ids]
        found: dict[int, StructureRecord] = {}
        with self.session(write=False) as s:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                for st in s.scalars(select(Structure).where(self._member(Structure.id, chunk))):
                    found[st.id] = _structure(st)
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"unknown structure ids {missing[:10]}")
        return [found[i] for i in ids]

    def get_atoms(self, structure_ids: Sequence[int]) -> list[Any]:
        """Structures by id as ``ase.Atoms``."""
        return [r.to_atoms() for r in self.get_structures(structure_ids)]

    def count_structures(self, campaign: CampaignRef | None = None) -> int:
        """Number of stored structures: all, or those selected by a campaign."""
        with self.session(write=False) as s:
            if campaign is None:
                return s.scalar(select(func.count()).select_from(Structure))
            c = self._campaign_row(s, campaign)
            return s.scalar(
                select(func.count()).select_from(Selection).where(Selection.campaign_id == c.id)
            )

    def list_structures(
        self, campaign: CampaignRef | None = None, *, offset: int = 0, limit: int | None = 100
    ) -> list[StructureRecord]:
        """Structures (all, or those selected by a campaign) by id, one page at a time."""
        with self.session(write=False) as s:
            q = select(Structure).order_by(Structure.id)
            if campaign is not None:
                c = self._campaign_row(s, campaign)
                q = q.join(
                    Selection,
                    and_(Selection.structure_id == Structure.id, Selection.campaign_id == c.id),
                )
            return [_structure(x) for x in s.scalars(q.offset(offset).limit(limit))]

    # ------------------------------------------------------------------ selections
    def record_selections(
        self,
        campaign: CampaignRef,
        selections: Sequence[SelectionInput],
        *,
        iteration_id: int | None = None,
    ) -> list[int]:
        """Record structures selected into the campaign's training data (idempotent: a
        structure already selected by the campaign keeps its first selection). Returns the
        selection ids in input order."""
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            return self._record_selections(s, c.id, selections, iteration_id)

    def _record_selections(
        self,
        s: Session,
        campaign_id: int,
        selections: Sequence[SelectionInput],
        iteration_id: int | None,
    ) -> list[int]:
        if iteration_id is not None:
            self._iteration_row(s, iteration_id, campaign_id)
        rows = []
        now = utcnow()
        for i, sel in enumerate(selections):
            for key in ("max_force_dev", "energy_std"):
                v = getattr(sel, key)
                if v is not None:
                    check_energy(v, f"selection {i}: {key}")
            fstd = None
            if sel.forces_std is not None:
                fstd = np.asarray(sel.forces_std, dtype=np.float64)
                if fstd.ndim != 1:
                    raise DatabaseInputError(f"selection {i}: forces_std must be 1-D (natoms,)")
            check_nonempty(sel.reason, f"selection {i}: reason")
            rows.append(
                {
                    "campaign_id": campaign_id,
                    "iteration_id": iteration_id,
                    "structure_id": int(sel.structure_id),
                    "max_force_dev": sel.max_force_dev,
                    "energy_std": sel.energy_std,
                    "forces_std": fstd,
                    "reason": sel.reason,
                    "strategy": sel.strategy,
                    "created_at": now,
                }
            )
        self._check_structures_exist(s, [r["structure_id"] for r in rows])
        unique = list({r["structure_id"]: r for r in reversed(rows)}.values())[::-1]
        found = self._insert_new(
            s, Selection, unique, ["campaign_id", "structure_id"], "structure_id"
        )
        sids = [r["structure_id"] for r in rows]
        existing = [i for i in dict.fromkeys(sids) if i not in found]
        for chunk in _chunks(existing):
            q = select(Selection.structure_id, Selection.id).where(
                Selection.campaign_id == campaign_id, self._member(Selection.structure_id, chunk)
            )
            found.update(s.execute(q).all())
        return [found[i] for i in sids]

    def _check_structures_exist(self, s: Session, structure_ids: Sequence[int]) -> dict[int, int]:
        """natoms by structure id; raises NotFoundError on unknown ids."""
        natoms: dict[int, int] = {}
        uniq = list(dict.fromkeys(structure_ids))
        for chunk in _chunks(uniq):
            q = select(Structure.id, Structure.natoms).where(self._member(Structure.id, chunk))
            natoms.update(s.execute(q).all())
        missing = [i for i in uniq if i not in natoms]
        if missing:
            raise NotFoundError(f"unknown structure ids {missing[:10]}")
        return natoms

    def list_selections(
        self,
        campaign: CampaignRef,
        *,
        iteration_id: int | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[SelectionRecord]:
        """A campaign's selections (optionally of one iteration), by id."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            q = select(Selection).where(Selection.campaign_id == c.id).order_by(Selection.id)
            if iteration_id is not None:
                q = q.where(Selection.iteration_id == iteration_id)
            q = q.offset(offset).limit(limit)
            return [_selection(x) for x in s.scalars(q)]
