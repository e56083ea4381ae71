"""The repository layer: :class:`Store` owns the engine, sessions and transactions.

Every public method is one transaction: it commits when it returns and rolls back completely
when it raises, so callers never handle sessions and a failure never leaves half-written rows.
Methods return plain dataclasses from :mod:`database.records`.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from . import engine as _engine
from .errors import (
    DatabaseInputError,
    DuplicateError,
    LabelStateError,
    NotFoundError,
    UnknownCampaignError,
)
from .hashing import structure_hash
from .models import (
    CAMPAIGN_STATUSES,
    ITERATION_STATUSES,
    LABEL_STATUSES,
    ApiToken,
    Campaign,
    Iteration,
    Label,
    Model,
    Selection,
    Structure,
    utcnow,
)
from .records import (
    ApiTokenRecord,
    CampaignRecord,
    IterationMetrics,
    IterationRecord,
    LabelledStructure,
    LabelRecord,
    LabelTask,
    ModelRecord,
    Origin,
    SelectionInput,
    SelectionRecord,
    StructureRecord,
)
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

CampaignRef = int | str
"""A campaign given by id (int) or by name (str)."""

_CHUNK = 500  # rows per IN (...) lookup / insert batch
_TERMINAL_CAMPAIGN = ("cancelled", "converged", "failed")


def hash_token(token: str) -> str:
    """SHA-256 hex digest of an API token (what :class:`Store` stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# --------------------------------------------------------------------------- converters
def _campaign(c: Campaign) -> CampaignRecord:
    return CampaignRecord(c.id, c.name, dict(c.config or {}), c.status, c.status_message,
                          _utc(c.created_at), _utc(c.updated_at), _utc(c.started_at),
                          _utc(c.finished_at))


def _iteration(it: Iteration) -> IterationRecord:
    return IterationRecord(it.id, it.campaign_id, it.index, it.status, _utc(it.started_at),
                           _utc(it.finished_at), dict(it.step_timings or {}), it.n_explored,
                           it.n_accurate, it.n_candidate, it.n_failed, dict(it.validation or {}),
                           it.max_force_devs)


def _structure(s: Structure) -> StructureRecord:
    return StructureRecord(s.id, s.hash, s.natoms, s.formula, s.numbers, s.positions, s.cell,
                           s.pbc, s.source, s.origin_campaign_id, s.origin_iteration_id, s.walker,
                           s.temperature, s.pressure, s.md_step, dict(s.info or {}),
                           _utc(s.created_at))


def _selection(s: Selection) -> SelectionRecord:
    return SelectionRecord(s.id, s.campaign_id, s.iteration_id, s.structure_id, s.max_force_dev,
                           s.energy_std, s.forces_std, s.reason, s.strategy, _utc(s.created_at))


def _label(lb: Label) -> LabelRecord:
    return LabelRecord(lb.id, lb.structure_id, lb.campaign_id, lb.iteration_id, lb.labeler,
                       lb.labeler_version, lb.settings_hash, dict(lb.settings or {}), lb.status,
                       lb.energy, lb.forces, lb.stress, lb.failure_kind, lb.failure_message,
                       lb.attempts, lb.wall_time, lb.host, lb.worker, _utc(lb.created_at),
                       _utc(lb.claimed_at), _utc(lb.finished_at))


def _model(m: Model) -> ModelRecord:
    return ModelRecord(m.id, m.campaign_id, m.iteration_id, m.member_count, m.checkpoint_uri,
                       m.checkpoint_sha256, m.training_label_ids, dict(m.validation or {}),
                       _utc(m.created_at))


def _token(t: ApiToken) -> ApiTokenRecord:
    return ApiTokenRecord(t.id, t.name, t.token_sha256, _utc(t.created_at), _utc(t.revoked_at))


def hill_formula(numbers: np.ndarray) -> str:
    """Chemical formula in Hill order (C, H, then alphabetical; alphabetical without C), as
    ``ase.Atoms.get_chemical_formula()`` writes it, computed with one ``numpy.unique``."""
    from ase.data import chemical_symbols

    zs, counts = np.unique(numbers, return_counts=True)
    parts = {chemical_symbols[z]: int(n) for z, n in zip(zs.tolist(), counts.tolist(), strict=True)}
    order = sorted(parts)
    if "C" in parts:
        order = ["C"] + (["H"] if "H" in parts else []) + [x for x in order if x not in ("C", "H")]
    return "".join(x + (str(parts[x]) if parts[x] > 1 else "") for x in order)


def _structure_row(atoms, origin: Origin | None, *, source: str, campaign_id: int | None,
                   iteration_id: int | None, now: datetime) -> dict[str, Any]:
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    origin = origin or Origin()
    return {
        "hash": structure_hash(numbers, positions, cell, pbc),
        "natoms": len(numbers),
        "formula": hill_formula(numbers),
        "numbers": numbers,
        "positions": positions,
        "cell": cell,
        "pbc": pbc,
        "source": source,
        "origin_campaign_id": campaign_id,
        "origin_iteration_id": iteration_id,
        "walker": origin.walker,
        "temperature": origin.temperature,
        "pressure": origin.pressure,
        "md_step": origin.md_step,
        "info": check_json(origin.info, "origin info"),
        "created_at": now,
    }


class Store:
    """Repository over one database (SQLite file or PostgreSQL).

    Create with :meth:`from_url` or :meth:`sqlite`; both migrate the schema to head unless
    ``migrate=False``. Thread-safe: every method opens its own session. Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, engine: Engine, *, owns_engine: bool = True) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        self.backend: str = engine.dialect.name  # "sqlite" | "postgresql"
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(pesflow_write=True),
                                   expire_on_commit=False)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True, echo: bool = False) -> Store:
        """Open the database at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
        store = cls(_engine.make_engine(url, echo=echo))
        if migrate:
            store.upgrade()
        return store

    @classmethod
    def sqlite(cls, data_dir: str | Path, **kwargs: Any) -> Store:
        """Open (creating if needed) the embedded default ``<data_dir>/pesflow.sqlite``."""
        return cls.from_url(_engine.sqlite_url(data_dir), **kwargs)

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision``."""
        _engine.upgrade(self.engine, revision)

    def close(self) -> None:
        """Release the connections."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        Public for the rare query the methods below do not cover; prefer the methods.
        On SQLite a write transaction starts with ``BEGIN IMMEDIATE``."""
        factory = self._write if write else self._read
        with factory() as s, s.begin():
            yield s

    def _insert(self, model):
        # Core insert on the table: executemany / insertmanyvalues without ORM bookkeeping.
        dialect = postgresql if self.backend == "postgresql" else sqlite
        return dialect.insert(model.__table__)

    # ------------------------------------------------------------------ lookups
    @staticmethod
    def _campaign_row(s: Session, campaign: CampaignRef, *, lock: bool = False) -> Campaign:
        if isinstance(campaign, CampaignRecord):
            campaign = campaign.id
        if isinstance(campaign, bool) or not isinstance(campaign, int | str):
            raise DatabaseInputError(f"campaign must be an id or a name, got {campaign!r}")
        q = select(Campaign).where(
            Campaign.id == campaign if isinstance(campaign, int) else Campaign.name == campaign
        )
        if lock:
            q = q.with_for_update()
        row = s.scalars(q).one_or_none()
        if row is None:
            raise UnknownCampaignError(f"unknown campaign {campaign!r}")
        return row

    @staticmethod
    def _iteration_row(s: Session, iteration_id: int, campaign_id: int | None = None) -> Iteration:
        it = s.get(Iteration, iteration_id)
        if it is None:
            raise NotFoundError(f"unknown iteration id {iteration_id}")
        if campaign_id is not None and it.campaign_id != campaign_id:
            raise DatabaseInputError(
                f"iteration id {iteration_id} belongs to campaign {it.campaign_id}, not {campaign_id}"
            )
        return it

    # ------------------------------------------------------------------ campaigns
    def create_campaign(self, name: str, config: dict[str, Any] | None = None, *,
                        status: str = "created", exist_ok: bool = False) -> CampaignRecord:
        """Create a campaign with a config snapshot. ``exist_ok`` returns an existing one
        (resume); otherwise an existing name raises :class:`DuplicateError`."""
        check_nonempty(name, "campaign name")
        config = check_json(config or {}, "campaign config")
        check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        with self.session() as s:
            existing = s.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()
            if existing is not None:
                if exist_ok:
                    return _campaign(existing)
                raise DuplicateError(f"campaign {name!r} already exists")
            c = Campaign(name=name, config=config, status=status)
            if status == "running":
                c.started_at = utcnow()
            s.add(c)
            s.flush()
            return _campaign(c)

    def get_campaign(self, campaign: CampaignRef) -> CampaignRecord:
        """A campaign by id or name; :class:`UnknownCampaignError` if absent."""
        with self.session(write=False) as s:
            return _campaign(self._campaign_row(s, campaign))

    def list_campaigns(self) -> list[CampaignRecord]:
        """All campaigns, oldest first."""
        with self.session(write=False) as s:
            return [_campaign(c) for c in s.scalars(select(Campaign).order_by(Campaign.id))]

    def set_campaign_status(self, campaign: CampaignRef, status: str,
                            message: str | None = None) -> CampaignRecord:
        """Change the status (created/running/paused/cancelled/converged/failed); sets
        ``started_at`` on the first ``running`` and ``finished_at`` on a terminal status."""
        check_choice(status, CAMPAIGN_STATUSES, "campaign status")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            c.status = status
            c.status_message = message
            now = utcnow()
            c.updated_at = now
            if status == "running" and c.started_at is None:
                c.started_at = now
            c.finished_at = now if status in _TERMINAL_CAMPAIGN else None
            s.flush()
            return _campaign(c)

    def update_campaign_config(self, campaign: CampaignRef, config: dict[str, Any]) -> CampaignRecord:
        """Replace the config snapshot."""
        config = check_json(config, "campaign config")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            c.config = config
            c.updated_at = utcnow()
            s.flush()
            return _campaign(c)

    # ------------------------------------------------------------------ iterations
    def start_iteration(self, campaign: CampaignRef, index: int | None = None) -> IterationRecord:
        """Get or create iteration ``index`` (default: one after the latest) and mark it
        ``running``. Idempotent: calling it again for the same index returns the same row."""
        if index is not None and (not isinstance(index, int) or index < 0):
            raise DatabaseInputError(f"iteration index must be an int >= 0, got {index!r}")
        with self.session() as s:
            c = self._campaign_row(s, campaign, lock=True)
            if index is None:
                last = s.scalar(select(func.max(Iteration.index)).where(Iteration.campaign_id == c.id))
                index = 0 if last is None else last + 1
            it = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id,
                                                   Iteration.index == index)).one_or_none()
            if it is None:
                it = Iteration(campaign_id=c.id, index=index, status="running",
                               step_timings={}, validation={})
                s.add(it)
            elif it.status == "created":
                it.status = "running"
            if it.started_at is None:
                it.started_at = utcnow()
            s.flush()
            return _iteration(it)

    def get_iteration(self, campaign: CampaignRef, index: int) -> IterationRecord:
        """Iteration ``index`` of a campaign; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            it = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id,
                                                   Iteration.index == index)).one_or_none()
            if it is None:
                raise NotFoundError(f"campaign {c.name!r} has no iteration {index}")
            return _iteration(it)

    def latest_iteration(self, campaign: CampaignRef) -> IterationRecord | None:
        """The iteration with the highest index, or ``None``."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            it = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id)
                           .order_by(Iteration.index.desc()).limit(1)).one_or_none()
            return None if it is None else _iteration(it)

    def list_iterations(self, campaign: CampaignRef) -> list[IterationRecord]:
        """All iterations of a campaign by index."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            rows = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id)
                             .order_by(Iteration.index))
            return [_iteration(it) for it in rows]

    def record_step_time(self, iteration_id: int, step: str, seconds: float) -> IterationRecord:
        """Add ``seconds`` of wall time to ``step`` (train/explore/select/label/...)."""
        check_nonempty(step, "step name")
        seconds = check_energy(seconds, f"time of step {step!r}")
        if seconds < 0:
            raise DatabaseInputError(f"time of step {step!r} is negative ({seconds})")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            timings = dict(it.step_timings or {})
            timings[step] = timings.get(step, 0.0) + seconds
            it.step_timings = timings
            s.flush()
            return _iteration(it)

    def update_iteration(self, iteration_id: int, *, status: str | None = None,
                         n_explored: int | None = None, n_accurate: int | None = None,
                         n_candidate: int | None = None, n_failed: int | None = None,
                         validation: dict[str, Any] | None = None,
                         max_force_devs: np.ndarray | Sequence[float] | None = None,
                         ) -> IterationRecord:
        """Set counts, validation errors (merged into the stored dict), the explored frames'
        max force deviations (float64 array, eV/Å) and/or the status (``done``/``failed``
        set ``finished_at``)."""
        if status is not None:
            check_choice(status, ITERATION_STATUSES, "iteration status")
        counts = {"n_explored": n_explored, "n_accurate": n_accurate,
                  "n_candidate": n_candidate, "n_failed": n_failed}
        for key, value in counts.items():
            if value is not None and (not isinstance(value, int | np.integer) or value < 0):
                raise DatabaseInputError(f"{key} must be an int >= 0, got {value!r}")
        if validation is not None:
            validation = check_json(validation, "validation metrics")
        if max_force_devs is not None:
            max_force_devs = np.asarray(max_force_devs, dtype=np.float64)
            if max_force_devs.ndim != 1:
                raise DatabaseInputError(
                    f"max_force_devs must be 1-D, got shape {max_force_devs.shape}")
        with self.session() as s:
            it = self._iteration_row(s, iteration_id)
            for key, value in counts.items():
                if value is not None:
                    setattr(it, key, int(value))
            if validation is not None:
                it.validation = {**(it.validation or {}), **validation}
            if max_force_devs is not None:
                it.max_force_devs = max_force_devs
            if status is not None:
                it.status = status
                if status in ("done", "failed"):
                    it.finished_at = utcnow()
            s.flush()
            return _iteration(it)

    def force_deviation_histogram(self, iteration_id: int, bins: int | Sequence[float] = 50,
                                  range: tuple[float, float] | None = None,
                                  ) -> tuple[np.ndarray, np.ndarray]:
        """Histogram (counts, edges) of an iteration's stored max force deviations."""
        with self.session(write=False) as s:
            it = self._iteration_row(s, iteration_id)
            data = it.max_force_devs if it.max_force_devs is not None else np.zeros(0)
        return np.histogram(data, bins=bins, range=range)

    def iteration_metrics(self, campaign: CampaignRef) -> list[IterationMetrics]:
        """Per-iteration figures for the dashboard (counts, fractions, timings, validation,
        selections and labels by status)."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            its = list(s.scalars(select(Iteration).where(Iteration.campaign_id == c.id)
                                 .order_by(Iteration.index)))
            sel = dict(s.execute(select(Selection.iteration_id, func.count())
                                 .where(Selection.campaign_id == c.id)
                                 .group_by(Selection.iteration_id)).all())
            lab: dict[int, dict[str, int]] = {}
            for it_id, status, n in s.execute(
                select(Label.iteration_id, Label.status, func.count())
                .where(Label.campaign_id == c.id).group_by(Label.iteration_id, Label.status)
            ):
                lab.setdefault(it_id, {})[status] = n
        out = []
        for it in its:
            n = it.n_explored
            out.append(IterationMetrics(
                iteration_id=it.id, index=it.index, status=it.status,
                started_at=_utc(it.started_at), finished_at=_utc(it.finished_at),
                step_timings=dict(it.step_timings or {}), n_explored=n,
                n_accurate=it.n_accurate, n_candidate=it.n_candidate, n_failed=it.n_failed,
                accurate_fraction=it.n_accurate / n if n else None,
                candidate_fraction=it.n_candidate / n if n else None,
                validation=dict(it.validation or {}), n_selected=sel.get(it.id, 0),
                labels={st: lab.get(it.id, {}).get(st, 0) for st in LABEL_STATUSES},
            ))
        return out

    # ------------------------------------------------------------------ structures
    def add_structures(self, atoms_list: Sequence[Any], *, campaign: CampaignRef | None = None,
                       iteration_id: int | None = None,
                       origins: Sequence[Origin | None] | None = None,
                       source: str = "md") -> list[int]:
        """Store structures (``ase.Atoms``), deduplicated by canonical hash, and return their
        ids in input order (an already stored structure returns its existing id and keeps its
        first origin)."""
        with self.session() as s:
            return self._add_structures(s, atoms_list, campaign=campaign,
                                        iteration_id=iteration_id, origins=origins, source=source)

    def _add_structures(self, s: Session, atoms_list: Sequence[Any], *, campaign, iteration_id,
                        origins, source) -> list[int]:
        if origins is not None and len(origins) != len(atoms_list):
            raise DatabaseInputError(
                f"got {len(origins)} origins for {len(atoms_list)} structures")
        for i, atoms in enumerate(atoms_list):
            check_atoms(atoms, f"structure {i}")
        campaign_id = self._campaign_row(s, campaign).id if campaign is not None else None
        if iteration_id is not None:
            self._iteration_row(s, iteration_id, campaign_id)
        now = utcnow()
        rows = [_structure_row(a, origins[i] if origins else None, source=source,
                               campaign_id=campaign_id, iteration_id=iteration_id, now=now)
                for i, a in enumerate(atoms_list)]
        hashes = [r["hash"] for r in rows]
        ids = self._ids_for_hashes(s, hashes)
        new, seen = [], set()
        for r in rows:
            if r["hash"] not in ids and r["hash"] not in seen:
                seen.add(r["hash"])
                new.append(r)
        for chunk in _chunks(new):
            s.execute(self._insert(Structure).on_conflict_do_nothing(index_elements=["hash"]),
                      list(chunk))
        if new:
            ids.update(self._ids_for_hashes(s, [r["hash"] for r in new]))
        return [ids[h] for h in hashes]

    @staticmethod
    def _ids_for_hashes(s: Session, hashes: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        uniq = list(dict.fromkeys(hashes))
        for chunk in _chunks(uniq):
            out.update(s.execute(select(Structure.hash, Structure.id)
                                 .where(Structure.hash.in_(chunk))).all())
        return out

    def add_structure(self, atoms: Any, **kwargs: Any) -> int:
        """Store one structure (see :meth:`add_structures`; ``origin=`` for one origin)."""
        origin = kwargs.pop("origin", None)
        return self.add_structures([atoms], origins=[origin], **kwargs)[0]

    def find_structure(self, atoms: Any) -> int | None:
        """Id of the stored structure with the same canonical hash, or ``None``."""
        check_atoms(atoms)
        h = structure_hash(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
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
                for st in s.scalars(select(Structure).where(Structure.id.in_(chunk))):
                    found[st.id] = _structure(st)
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"unknown structure ids {missing[:10]}")
        return [found[i] for i in ids]

    def get_atoms(self, structure_ids: Sequence[int]) -> list[Any]:
        """Structures by id as ``ase.Atoms``."""
        return [r.to_atoms() for r in self.get_structures(structure_ids)]

    def count_structures(self) -> int:
        """Number of stored structures (all campaigns)."""
        with self.session(write=False) as s:
            return s.scalar(select(func.count()).select_from(Structure))

    # ------------------------------------------------------------------ selections
    def record_selections(self, campaign: CampaignRef, selections: Sequence[SelectionInput], *,
                          iteration_id: int | None = None) -> list[int]:
        """Record structures selected into the campaign's training data (idempotent: a
        structure already selected by the campaign keeps its first selection). Returns the
        selection ids in input order."""
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            return self._record_selections(s, c.id, selections, iteration_id)

    def _record_selections(self, s: Session, campaign_id: int,
                           selections: Sequence[SelectionInput],
                           iteration_id: int | None) -> list[int]:
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
            rows.append({"campaign_id": campaign_id, "iteration_id": iteration_id,
                         "structure_id": int(sel.structure_id),
                         "max_force_dev": sel.max_force_dev, "energy_std": sel.energy_std,
                         "forces_std": fstd, "reason": sel.reason, "strategy": sel.strategy,
                         "created_at": now})
        self._check_structures_exist(s, [r["structure_id"] for r in rows])
        for chunk in _chunks(rows):
            s.execute(self._insert(Selection).on_conflict_do_nothing(
                index_elements=["campaign_id", "structure_id"]), list(chunk))
        sids = [r["structure_id"] for r in rows]
        found: dict[int, int] = {}
        for chunk in _chunks(list(dict.fromkeys(sids))):
            found.update(s.execute(select(Selection.structure_id, Selection.id).where(
                Selection.campaign_id == campaign_id, Selection.structure_id.in_(chunk))).all())
        return [found[i] for i in sids]

    @staticmethod
    def _check_structures_exist(s: Session, structure_ids: Sequence[int]) -> dict[int, int]:
        """natoms by structure id; raises NotFoundError on unknown ids."""
        natoms: dict[int, int] = {}
        uniq = list(dict.fromkeys(structure_ids))
        for chunk in _chunks(uniq):
            natoms.update(s.execute(select(Structure.id, Structure.natoms)
                                    .where(Structure.id.in_(chunk))).all())
        missing = [i for i in uniq if i not in natoms]
        if missing:
            raise NotFoundError(f"unknown structure ids {missing[:10]}")
        return natoms

    def list_selections(self, campaign: CampaignRef, *, iteration_id: int | None = None,
                        offset: int = 0, limit: int | None = None) -> list[SelectionRecord]:
        """A campaign's selections (optionally of one iteration), by id."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            q = select(Selection).where(Selection.campaign_id == c.id).order_by(Selection.id)
            if iteration_id is not None:
                q = q.where(Selection.iteration_id == iteration_id)
            q = q.offset(offset).limit(limit)
            return [_selection(x) for x in s.scalars(q)]

    # ------------------------------------------------------------------ labels
    def request_labels(self, campaign: CampaignRef, structure_ids: Sequence[int], *,
                       labeler: str, settings_hash: str, labeler_version: str = "",
                       settings: dict[str, Any] | None = None,
                       iteration_id: int | None = None) -> list[int]:
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
            self._record_selections(s, c.id, [SelectionInput(i, reason="requested") for i in sids],
                                    iteration_id)
            now = utcnow()
            rows = [{"structure_id": i, "campaign_id": c.id, "iteration_id": iteration_id,
                     "labeler": labeler, "labeler_version": labeler_version,
                     "settings_hash": settings_hash, "settings": settings, "status": "pending",
                     "attempts": 0, "created_at": now} for i in dict.fromkeys(sids)]
            for chunk in _chunks(rows):
                s.execute(self._insert(Label).on_conflict_do_nothing(
                    index_elements=["structure_id", "labeler", "settings_hash"]), list(chunk))
            ids = self._label_ids(s, sids, labeler, settings_hash)
            return [ids[i] for i in sids]

    @staticmethod
    def _label_ids(s: Session, structure_ids: Sequence[int], labeler: str,
                   settings_hash: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for chunk in _chunks(list(dict.fromkeys(structure_ids))):
            out.update(s.execute(select(Label.structure_id, Label.id).where(
                Label.labeler == labeler, Label.settings_hash == settings_hash,
                Label.structure_id.in_(chunk))).all())
        return out

    def claim_labels(self, *, limit: int = 1, labeler: str | None = None,
                     settings_hash: str | None = None, campaign: CampaignRef | None = None,
                     worker: str | None = None) -> list[LabelTask]:
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
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            q = q.order_by(Label.id).limit(limit).with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            if not ids:
                return []
            # The status guard + RETURNING make the claim safe even without the row locks.
            ids = list(s.scalars(update(Label).where(Label.id.in_(ids), Label.status == "pending")
                                 .values(status="running", worker=worker, claimed_at=utcnow(),
                                         attempts=Label.attempts + 1)
                                 .returning(Label.id)
                                 .execution_options(synchronize_session=False)))
            rows = s.execute(select(Label, Structure).join(Structure,
                                                           Structure.id == Label.structure_id)
                             .where(Label.id.in_(ids)).order_by(Label.id)).all()
            return [LabelTask(lb.id, lb.structure_id, lb.labeler, lb.labeler_version,
                              lb.settings_hash, dict(lb.settings or {}), lb.attempts,
                              _structure(st).to_atoms()) for lb, st in rows]

    def _label_for_update(self, s: Session, label_id: int, worker: str | None) -> Label:
        lb = s.scalars(select(Label).where(Label.id == label_id).with_for_update()).one_or_none()
        if lb is None:
            raise NotFoundError(f"unknown label id {label_id}")
        if lb.status not in ("pending", "running"):
            raise LabelStateError(f"label {label_id} is {lb.status}; only pending or running "
                                  "labels take a result")
        if worker is not None and lb.worker != worker:
            raise LabelStateError(f"label {label_id} is claimed by {lb.worker!r}, not {worker!r}")
        return lb

    def store_result(self, label_id: int, *, energy: float, forces: Any, stress: Any = None,
                     wall_time: float | None = None, host: str | None = None,
                     worker: str | None = None) -> LabelRecord:
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

    def store_failure(self, label_id: int, *, kind: str, message: str = "",
                      wall_time: float | None = None, host: str | None = None,
                      worker: str | None = None) -> LabelRecord:
        """Record a failed calculation (kind: scf_unconverged / crashed / timeout /
        invalid_input / other, with the code's own message); the label becomes ``failed``.
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

    def requeue_running(self, campaign: CampaignRef | None = None, *,
                        older_than: timedelta | None = None) -> int:
        """Reset ``running`` labels (e.g. left by a killed worker) to ``pending``; only those
        claimed more than ``older_than`` ago if given. Returns how many."""
        with self.session() as s:
            q = update(Label).where(Label.status == "running")
            if campaign is not None:
                q = q.where(Label.campaign_id == self._campaign_row(s, campaign).id)
            if older_than is not None:
                q = q.where(Label.claimed_at < utcnow() - older_than)
            res = s.execute(q.values(status="pending", worker=None, claimed_at=None)
                            .execution_options(synchronize_session=False))
            return res.rowcount

    def requeue_failed(self, campaign: CampaignRef | None = None, *,
                       kinds: Iterable[str] | None = None, max_attempts: int | None = None) -> int:
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
            res = s.execute(q.values(status="pending", worker=None, claimed_at=None,
                                     failure_kind=None, failure_message=None)
                            .execution_options(synchronize_session=False))
            return res.rowcount

    def get_label(self, label_id: int) -> LabelRecord:
        """A label by id; :class:`NotFoundError` if absent."""
        with self.session(write=False) as s:
            lb = s.get(Label, label_id)
            if lb is None:
                raise NotFoundError(f"unknown label id {label_id}")
            return _label(lb)

    def list_labels(self, campaign: CampaignRef | None = None, *, status: str | None = None,
                    iteration_id: int | None = None, offset: int = 0,
                    limit: int | None = 100) -> list[LabelRecord]:
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

    def training_set(self, campaign: CampaignRef, *, labeler: str,
                     settings_hash: str) -> list[LabelledStructure]:
        """All ``done`` labels with this labeler and settings hash of the structures the
        campaign selected (explored, seeded or requested), ordered by label id."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            q = (select(Label, Structure)
                 .join(Structure, Structure.id == Label.structure_id)
                 .join(Selection, and_(Selection.structure_id == Label.structure_id,
                                       Selection.campaign_id == c.id))
                 .where(Label.status == "done", Label.labeler == labeler,
                        Label.settings_hash == settings_hash)
                 .order_by(Label.id))
            return [LabelledStructure(_label(lb), _structure(st)) for lb, st in s.execute(q)]

    def training_label_ids(self, campaign: CampaignRef, *, labeler: str,
                           settings_hash: str) -> np.ndarray:
        """Ids (int64, ascending) of the labels :meth:`training_set` would return."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            q = (select(Label.id)
                 .join(Selection, and_(Selection.structure_id == Label.structure_id,
                                       Selection.campaign_id == c.id))
                 .where(Label.status == "done", Label.labeler == labeler,
                        Label.settings_hash == settings_hash)
                 .order_by(Label.id))
            return np.asarray(list(s.scalars(q)), dtype=np.int64)

    def add_labelled(self, campaign: CampaignRef, atoms_list: Sequence[Any], *,
                     energies: Sequence[float], forces: Sequence[Any],
                     stresses: Sequence[Any | None] | None = None, labeler: str,
                     settings_hash: str, labeler_version: str = "",
                     settings: dict[str, Any] | None = None, iteration_id: int | None = None,
                     source: str = "import", reason: str = "seed",
                     origins: Sequence[Origin | None] | None = None) -> list[int]:
        """Store already labelled structures in one transaction (import / seeding / bulk):
        structures (deduplicated), selections into the campaign and ``done`` labels.
        Everything is validated before anything is written; an existing ``done`` label for
        the same (structure, labeler, settings_hash) is kept, a non-done one is completed.
        Returns label ids in input order."""
        n = len(atoms_list)
        if len(energies) != n or len(forces) != n or (stresses is not None and len(stresses) != n):
            raise DatabaseInputError(f"got {n} structures but {len(energies)} energies, "
                                     f"{len(forces)} forces"
                                     + (f", {len(stresses)} stresses" if stresses is not None else ""))
        check_nonempty(labeler, "labeler")
        check_nonempty(settings_hash, "settings_hash")
        settings = check_json(settings or {}, "labeler settings")
        clean = []
        for i, atoms in enumerate(atoms_list):
            check_atoms(atoms, f"structure {i}")
            clean.append((check_energy(energies[i], f"structure {i}: energy"),
                          check_forces(forces[i], len(atoms), f"structure {i}: forces"),
                          check_stress(stresses[i] if stresses is not None else None,
                                       f"structure {i}: stress")))
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            sids = self._add_structures(s, atoms_list, campaign=c.id, iteration_id=iteration_id,
                                        origins=origins, source=source)
            self._record_selections(s, c.id, [SelectionInput(i, reason=reason) for i in sids],
                                    iteration_id)
            now = utcnow()
            rows, seen = [], set()
            for sid, (e, f, st) in zip(sids, clean, strict=True):
                if sid in seen:
                    continue
                seen.add(sid)
                rows.append({"structure_id": sid, "campaign_id": c.id,
                             "iteration_id": iteration_id, "labeler": labeler,
                             "labeler_version": labeler_version, "settings_hash": settings_hash,
                             "settings": settings, "status": "done", "energy": e, "forces": f,
                             "stress": st, "attempts": 0, "created_at": now, "finished_at": now,
                             "host": None})
            for chunk in _chunks(rows):
                s.execute(self._insert(Label).on_conflict_do_nothing(
                    index_elements=["structure_id", "labeler", "settings_hash"]), list(chunk))
            ids = self._label_ids(s, sids, labeler, settings_hash)
            by_sid = {r["structure_id"]: r for r in rows}
            not_done = []
            for chunk in _chunks(list(ids.values())):
                not_done += list(s.scalars(select(Label).where(Label.id.in_(chunk),
                                                               Label.status != "done")))
            for lb in not_done:
                r = by_sid[lb.structure_id]
                lb.energy, lb.forces, lb.stress = r["energy"], r["forces"], r["stress"]
                lb.status, lb.finished_at = "done", now
                lb.failure_kind = lb.failure_message = None
            return [ids[i] for i in sids]

    # ------------------------------------------------------------------ models
    def record_model(self, campaign: CampaignRef, *, member_count: int, checkpoint_uri: str,
                     checkpoint_sha256: str, training_label_ids: Sequence[int] | np.ndarray,
                     iteration_id: int | None = None,
                     validation: dict[str, Any] | None = None) -> ModelRecord:
        """Record a trained committee: checkpoint location and content hash, the label ids it
        was trained on, and validation metrics."""
        if not isinstance(member_count, int) or member_count < 1:
            raise DatabaseInputError(f"member_count must be an int >= 1, got {member_count!r}")
        check_nonempty(checkpoint_uri, "checkpoint_uri")
        if not (isinstance(checkpoint_sha256, str) and len(checkpoint_sha256) == 64):
            raise DatabaseInputError("checkpoint_sha256 must be 64 hex characters")
        label_ids = np.asarray(training_label_ids, dtype=np.int64).reshape(-1)
        validation = check_json(validation or {}, "validation metrics")
        with self.session() as s:
            c = self._campaign_row(s, campaign)
            if iteration_id is not None:
                self._iteration_row(s, iteration_id, c.id)
            m = Model(campaign_id=c.id, iteration_id=iteration_id, member_count=member_count,
                      checkpoint_uri=checkpoint_uri, checkpoint_sha256=checkpoint_sha256,
                      training_label_ids=label_ids, validation=validation)
            s.add(m)
            s.flush()
            return _model(m)

    def list_models(self, campaign: CampaignRef) -> list[ModelRecord]:
        """A campaign's models, oldest first."""
        with self.session(write=False) as s:
            c = self._campaign_row(s, campaign)
            return [_model(m) for m in s.scalars(select(Model).where(Model.campaign_id == c.id)
                                                 .order_by(Model.id))]

    def latest_model(self, campaign: CampaignRef) -> ModelRecord | None:
        """The most recently recorded model of a campaign, or ``None``."""
        models = self.list_models(campaign)
        return models[-1] if models else None

    # ------------------------------------------------------------------ API tokens
    def add_api_token(self, name: str, token: str) -> ApiTokenRecord:
        """Store an API token under ``name`` (only its SHA-256 is kept)."""
        check_nonempty(name, "token name")
        check_nonempty(token, "token")
        with self.session() as s:
            if s.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
                raise DuplicateError(f"API token {name!r} already exists")
            t = ApiToken(name=name, token_sha256=hash_token(token))
            s.add(t)
            s.flush()
            return _token(t)

    def verify_api_token(self, token: str) -> ApiTokenRecord | None:
        """The non-revoked token record matching ``token``, or ``None``."""
        with self.session(write=False) as s:
            t = s.scalars(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token),
                                                 ApiToken.revoked_at.is_(None))).one_or_none()
            return None if t is None else _token(t)

    def revoke_api_token(self, name: str) -> ApiTokenRecord:
        """Revoke a token by name (idempotent)."""
        with self.session() as s:
            t = s.scalars(select(ApiToken).where(ApiToken.name == name)).one_or_none()
            if t is None:
                raise NotFoundError(f"unknown API token {name!r}")
            if t.revoked_at is None:
                t.revoked_at = utcnow()
            s.flush()
            return _token(t)

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        """All tokens (hashes only)."""
        with self.session(write=False) as s:
            return [_token(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]

    # ------------------------------------------------------------------ datasets
    def export_extxyz(self, path: str | Path, campaign: CampaignRef, *, labeler: str,
                      settings_hash: str, config_type: str = "pesflow") -> int:
        """Write the campaign's training set as extended XYZ (see :mod:`database.extxyz`);
        returns the number of frames."""
        from .extxyz import export_extxyz

        return export_extxyz(self, path, campaign, labeler=labeler, settings_hash=settings_hash,
                             config_type=config_type)

    def import_labelled(self, paths: str | Path | Sequence[str | Path], campaign: CampaignRef, *,
                        labeler: str, settings_hash: str, **kwargs: Any) -> list[int]:
        """Seed a campaign from labelled files (extxyz, vasprun.xml, anything ASE reads with
        energies and forces); see :func:`database.extxyz.import_labelled`."""
        from .extxyz import import_labelled

        return import_labelled(self, paths, campaign, labeler=labeler,
                               settings_hash=settings_hash, **kwargs)
