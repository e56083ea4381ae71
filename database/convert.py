"""Conversions between ORM rows and the plain records of :mod:`database.records`, and
shared helpers of the repository modules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .hashing import structure_hash
from .models import (
    ApiToken,
    Campaign,
    Iteration,
    Label,
    Model,
    Selection,
    Structure,
)
from .records import (
    ApiTokenRecord,
    CampaignRecord,
    IterationRecord,
    LabelRecord,
    ModelRecord,
    Origin,
    SelectionRecord,
    StructureRecord,
)
from .validation import (
    check_json,
)

CampaignRef = int | str
"""A campaign given by id (int) or by name (str)."""

_CHUNK = 500  # rows per IN (...) lookup / insert batch


def hash_token(token: str) -> str:
    """SHA-256 hex digest of an API token (what :class:`Store` stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


def as_utc(dt: datetime | None) -> datetime | None:
    """The datetime as timezone-aware UTC (SQLite returns naive datetimes)."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# --------------------------------------------------------------------------- converters
def _campaign(c: Campaign) -> CampaignRecord:
    return CampaignRecord(
        c.id,
        c.name,
        dict(c.config or {}),
        c.status,
        c.status_message,
        as_utc(c.created_at),
        as_utc(c.updated_at),
        as_utc(c.started_at),
        as_utc(c.finished_at),
    )


def _iteration(it: Iteration) -> IterationRecord:
    return IterationRecord(
        it.id,
        it.campaign_id,
        it.index,
        it.status,
        as_utc(it.started_at),
        as_utc(it.finished_at),
        dict(it.step_timings or {}),
        it.n_explored,
        it.n_accurate,
        it.n_candidate,
        it.n_failed,
        dict(it.validation or {}),
        it.max_force_devs,
    )


def _structure(s: Structure) -> StructureRecord:
    return StructureRecord(
        s.id,
        s.hash,
        s.natoms,
        s.formula,
        s.numbers,
        s.positions,
        s.cell,
        s.pbc,
        s.source,
        s.origin_campaign_id,
        s.origin_iteration_id,
        s.walker,
        s.temperature,
        s.pressure,
        s.md_step,
        dict(s.info or {}),
        as_utc(s.created_at),
    )


def _selection(s: Selection) -> SelectionRecord:
    return SelectionRecord(
        s.id,
        s.campaign_id,
        s.iteration_id,
        s.structure_id,
        s.max_force_dev,
        s.energy_std,
        s.forces_std,
        s.reason,
        s.strategy,
        as_utc(s.created_at),
    )


def _label(lb: Label) -> LabelRecord:
    return LabelRecord(
        lb.id,
        lb.structure_id,
        lb.campaign_id,
        lb.iteration_id,
        lb.labeler,
        lb.labeler_version,
        lb.settings_hash,
        dict(lb.settings or {}),
        lb.status,
        lb.energy,
        lb.forces,
        lb.stress,
        lb.failure_kind,
        lb.failure_message,
        lb.attempts,
        lb.wall_time,
        lb.host,
        lb.worker,
        as_utc(lb.created_at),
        as_utc(lb.claimed_at),
        as_utc(lb.finished_at),
    )


def _model(m: Model) -> ModelRecord:
    return ModelRecord(
        m.id,
        m.campaign_id,
        m.iteration_id,
        m.member_count,
        m.checkpoint_uri,
        m.checkpoint_sha256,
        m.training_label_ids,
        dict(m.validation or {}),
        as_utc(m.created_at),
    )


def _token(t: ApiToken) -> ApiTokenRecord:
    return ApiTokenRecord(t.id, t.name, t.token_sha256, as_utc(t.created_at), as_utc(t.revoked_at))


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


def _structure_row(
    atoms,
    origin: Origin | None,
    *,
    source: str,
    campaign_id: int | None,
    iteration_id: int | None,
    now: datetime,
) -> dict[str, Any]:
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
