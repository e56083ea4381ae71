"""Conversions between ORM rows and the plain records of :mod:`database.records`, and
shared helpers of the repository modules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from structure_checks.state import physical_state

from .hashing import structure_hash
from .models import (
    ApiToken,
    Campaign,
    CampaignLease,
    Candidate,
    Iteration,
    IterationStep,
    Label,
    LabelAttempt,
    Model,
    Selection,
    Structure,
    WalkerRun,
)
from .records import (
    ApiTokenRecord,
    CampaignRecord,
    CandidateRecord,
    IterationRecord,
    LabelAttemptRecord,
    LabelRecord,
    LeaseRecord,
    ModelRecord,
    Origin,
    SelectionRecord,
    StructureRecord,
    WalkerRunRecord,
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
def _lease(row: CampaignLease, now: datetime) -> LeaseRecord:
    expires = as_utc(row.expires_at)
    return LeaseRecord(
        row.campaign_id,
        row.token,
        row.host,
        row.pid,
        row.purpose,
        as_utc(row.acquired_at),
        as_utc(row.heartbeat_at),
        expires,
        expires > as_utc(now),
        row.process,
    )


def effective_status(status: str, lease: LeaseRecord | None) -> str:
    """``running`` without a live lease is ``interrupted`` (its process is gone)."""
    if status == "running" and (lease is None or not lease.alive):
        return "interrupted"
    return status


def _campaign(
    c: Campaign, lease: CampaignLease | None = None, now: datetime | None = None
) -> CampaignRecord:
    lrec = _lease(lease, now or datetime.now(UTC)) if lease is not None else None
    status = effective_status(c.status, lrec)
    message = c.status_message
    if status == "interrupted" and c.status == "running":
        message = (
            f"interrupted: {lrec.holder} stopped renewing its lease (last heartbeat "
            f"{lrec.heartbeat_at.strftime('%Y-%m-%d %H:%M:%S')} UTC); `pesflow resume` continues"
            if lrec is not None
            else "interrupted: no process holds the campaign; `pesflow resume` continues"
        )
    return CampaignRecord(
        c.id,
        c.name,
        dict(c.config or {}),
        status,
        message,
        as_utc(c.created_at),
        as_utc(c.updated_at),
        as_utc(c.started_at),
        as_utc(c.finished_at),
        lrec,
    )


def _iteration(it: Iteration, steps: Sequence[IterationStep] = ()) -> IterationRecord:
    return IterationRecord(
        it.id,
        it.campaign_id,
        it.index,
        it.status,
        as_utc(it.started_at),
        as_utc(it.finished_at),
        {st.step: float(st.seconds) for st in steps},
        frozenset(st.step for st in steps if st.completed_at is not None),
        it.n_explored,
        it.n_accurate,
        it.n_candidate,
        it.n_failed,
        it.decision,
    )


def _walker_run(w: WalkerRun) -> WalkerRunRecord:
    return WalkerRunRecord(
        w.id,
        w.iteration_id,
        w.walker,
        w.status,
        w.model_id,
        w.temperature,
        w.pressure,
        w.ensemble,
        w.seed,
        w.n_frames,
        w.n_accurate,
        w.n_candidate,
        w.n_failed,
        bool(w.stopped_early),
        w.stop_reason,
        w.error,
        w.md_wall_s,
        w.max_force_devs,
        w.host,
        as_utc(w.finished_at),
    )


def _candidate(c: Candidate) -> CandidateRecord:
    return CandidateRecord(
        c.id,
        c.walker_run_id,
        c.iteration_id,
        c.structure_id,
        c.uncertainty,
        c.max_force_dev,
        c.md_step,
        bool(c.cut),
    )


def _attempt(a: LabelAttempt) -> LabelAttemptRecord:
    return LabelAttemptRecord(
        a.id,
        a.label_id,
        a.retry_round,
        a.attempt,
        a.status,
        a.message,
        a.wall_time,
        dict(a.settings or {}),
        dict(a.settings_changes or {}),
        a.workdir,
        a.host,
        as_utc(a.created_at),
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
        dict(s.state or {}),
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
        lb.claims,
        lb.retry_round,
        lb.code_version,
        dict(lb.effective_settings) if lb.effective_settings is not None else None,
        lb.effective_settings_hash,
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
        m.seed,
        m.parent_model_id,
    )


def _token(t: ApiToken) -> ApiTokenRecord:
    return ApiTokenRecord(
        t.id,
        t.name,
        t.token_sha256,
        t.scope,
        as_utc(t.created_at),
        as_utc(t.expires_at),
        as_utc(t.last_used_at),
        as_utc(t.revoked_at),
    )


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
    state = physical_state(atoms)  # checked by check_atoms
    origin = origin or Origin()
    return {
        "hash": structure_hash(numbers, positions, cell, pbc, state),
        "state": state or None,
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
