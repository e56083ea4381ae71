"""SQLAlchemy 2.0 ORM models: the schema of the pesflow database.

Tables: ``campaigns`` (+ ``campaign_leases``: who runs a campaign), ``iterations`` (+
``iteration_steps``, ``iteration_drops``, ``walker_runs``, ``candidates``: progress as rows), ``structures``,
``selections``, ``labels`` (+ ``label_attempts``: every DFT run), ``models``, ``api_tokens``.
Arrays are :class:`database.arrays.NDArray` columns (compact binary). Progress that several
processes write (walkers finishing together, label attempts) is one row per fact with a unique
key, never a key inside a JSON document that is read, modified and written back.
The Alembic migrations in ``database/migrations`` create exactly this schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .arrays import NDArray
from .orm_base import Base, in_values, utcnow
from .vocabulary import (
    CAMPAIGN_STATUSES,
    ITERATION_STATUSES,
    ITERATION_STEPS,
    LABEL_STATUSES,
    TOKEN_SCOPES,
    WALKER_STATUSES,
)
from .vocabulary import FAILURE_KINDS as FAILURE_KINDS  # imported from here too


class Campaign(Base):
    """An active-learning campaign: a name, the validated config snapshot and a status."""

    __tablename__ = "campaigns"
    __table_args__ = (CheckConstraint(in_values("status", CAMPAIGN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="created")
    status_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignLease(Base):
    """Who runs a campaign: the one writer (a process on a host) and until when its lease holds.

    At most one row per campaign. The holder renews ``expires_at`` by heartbeat; a row whose
    ``expires_at`` has passed belongs to a holder that died (its campaign reads as
    ``interrupted``) and is replaced by the next holder."""

    __tablename__ = "campaign_leases"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    # which process exactly (boot id, pid namespace, start time): tells a dead holder on this
    # machine from a live one in another pid namespace or a reused pid
    process: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Iteration(Base):
    """One loop of a campaign: status, explored-frame counts (aggregated over its walker runs
    when exploration completes) and the decision taken at its end. Step completion and timings
    are :class:`IterationStep` rows, walkers :class:`WalkerRun` rows, validation errors belong
    to the iteration's :class:`Model`."""

    __tablename__ = "iterations"
    __table_args__ = (
        UniqueConstraint("campaign_id", "index"),
        CheckConstraint(in_values("status", ITERATION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="created")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    n_explored: Mapped[int] = mapped_column(Integer, default=0)
    n_accurate: Mapped[int] = mapped_column(Integer, default=0)
    n_candidate: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    decision: Mapped[str | None] = mapped_column(Text)


class IterationStep(Base):
    """A step of an iteration (seed/train/explore/select/label/decide): accumulated wall time
    and, once it has completed, when. Unique per (iteration, step); time is added atomically."""

    __tablename__ = "iteration_steps"
    __table_args__ = (
        UniqueConstraint("iteration_id", "step"),
        CheckConstraint(in_values("step", ITERATION_STEPS), name="step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    iteration_id: Mapped[int] = mapped_column(
        ForeignKey("iterations.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(16))
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # s
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IterationDrop(Base):
    """Frames a filter of an iteration's step dropped, counted per reason (e.g. ``unfit
    geometry: atoms too close``). Unique per (iteration, step, reason); written in the
    transaction that completes the step."""

    __tablename__ = "iteration_drops"
    __table_args__ = (
        UniqueConstraint("iteration_id", "step", "reason"),
        CheckConstraint(in_values("step", ITERATION_STEPS), name="step"),
        CheckConstraint("count > 0", name="count"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    iteration_id: Mapped[int] = mapped_column(
        ForeignKey("iterations.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200))
    count: Mapped[int] = mapped_column(Integer)


class WalkerRun(Base):
    """One finished MD walker of an iteration: its settings, frame counts, why it stopped and
    the max force deviation of every recorded frame. Unique per (iteration, walker index):
    written once, in one transaction with the frames it offers (:class:`Candidate`)."""

    __tablename__ = "walker_runs"
    __table_args__ = (
        UniqueConstraint("iteration_id", "walker"),
        CheckConstraint(in_values("status", WALKER_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    iteration_id: Mapped[int] = mapped_column(
        ForeignKey("iterations.id", ondelete="CASCADE"), index=True
    )
    walker: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    temperature: Mapped[float | None] = mapped_column(Float)  # K
    pressure: Mapped[float | None] = mapped_column(Float)  # GPa
    ensemble: Mapped[str | None] = mapped_column(String(16))
    seed: Mapped[int | None] = mapped_column(BigInteger)  # 0 <= seed < 2**32
    n_frames: Mapped[int] = mapped_column(Integer, default=0)
    n_accurate: Mapped[int] = mapped_column(Integer, default=0)
    n_candidate: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    stopped_early: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    md_wall_s: Mapped[float | None] = mapped_column(Float)  # s
    max_force_devs = mapped_column(NDArray)  # float64 (n_frames,), eV/Å; NaN where not finite
    host: Mapped[str | None] = mapped_column(String(200))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Candidate(Base):
    """A frame a walker offers for labelling (between the trust levels, or the frame at which it
    was cut): the structure, its uncertainty in trust-window units and its max force deviation
    (eV/Å). The select step chooses among an iteration's candidates."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("walker_run_id", "structure_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    walker_run_id: Mapped[int] = mapped_column(
        ForeignKey("walker_runs.id", ondelete="CASCADE"), index=True
    )
    iteration_id: Mapped[int] = mapped_column(
        ForeignKey("iterations.id", ondelete="CASCADE"), index=True
    )
    structure_id: Mapped[int] = mapped_column(
        ForeignKey("structures.id", ondelete="CASCADE"), index=True
    )
    uncertainty: Mapped[float] = mapped_column(Float)
    max_force_dev: Mapped[float] = mapped_column(Float)  # eV/Å
    md_step: Mapped[int | None] = mapped_column(Integer)
    cut: Mapped[bool] = mapped_column(Boolean, default=False)


class Structure(Base):
    """An atomic configuration, stored once per canonical content hash (global, not per campaign).

    The origin columns record where it was first seen (later duplicates keep the first origin)."""

    __tablename__ = "structures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    natoms: Mapped[int] = mapped_column(Integer)
    formula: Mapped[str] = mapped_column(String(200))
    numbers = mapped_column(NDArray, nullable=False)  # int64 (N,)
    positions = mapped_column(NDArray, nullable=False)  # float64 (N, 3) Å
    cell = mapped_column(NDArray, nullable=False)  # float64 (3, 3) Å
    pbc = mapped_column(NDArray, nullable=False)  # bool (3,)
    # constraints, initial magmoms / charges, tags (structure_checks.state); in the hash
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32), default="md")
    origin_campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    origin_iteration_id: Mapped[int | None] = mapped_column(
        ForeignKey("iterations.id", ondelete="SET NULL")
    )
    walker: Mapped[str | None] = mapped_column(String(100))
    temperature: Mapped[float | None] = mapped_column(Float)  # K
    pressure: Mapped[float | None] = mapped_column(Float)  # GPa
    md_step: Mapped[int | None] = mapped_column(Integer)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Selection(Base):
    """A campaign's decision to add a structure to its training data: explored in an
    iteration and flagged by the committee (uncertainty, reason, strategy), or seeded."""

    __tablename__ = "selections"
    __table_args__ = (UniqueConstraint("campaign_id", "structure_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    iteration_id: Mapped[int | None] = mapped_column(
        ForeignKey("iterations.id", ondelete="CASCADE"), index=True
    )
    structure_id: Mapped[int] = mapped_column(
        ForeignKey("structures.id", ondelete="CASCADE"), index=True
    )
    max_force_dev: Mapped[float | None] = mapped_column(Float)  # eV/Å
    energy_std: Mapped[float | None] = mapped_column(Float)  # eV
    forces_std = mapped_column(NDArray)  # float64 (N,) eV/Å, per-atom sigma_i
    reason: Mapped[str] = mapped_column(String(32), default="candidate")
    strategy: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Label(Base):
    """A reference (DFT) calculation of one structure with one labeler and settings.

    Unique per (structure, labeler, settings_hash): the same structure is never labelled
    twice with the same settings. ``done`` rows always carry energy and forces and ``failed``
    rows a failure kind (database check constraints). ``attempts`` counts the DFT runs (one
    :class:`LabelAttempt` row each), ``claims`` how often a worker claimed it; ``retry_round``
    goes up when a failed label is requeued (its outcome directory is per round)."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("structure_id", "labeler", "settings_hash"),
        CheckConstraint(in_values("status", LABEL_STATUSES), name="status"),
        CheckConstraint(
            "status != 'done' OR (energy IS NOT NULL AND forces IS NOT NULL)", name="done_complete"
        ),
        CheckConstraint("status != 'failed' OR failure_kind IS NOT NULL", name="failed_kind"),
        Index("ix_labels_claim", "status", "labeler", "settings_hash", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structure_id: Mapped[int] = mapped_column(
        ForeignKey("structures.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    iteration_id: Mapped[int | None] = mapped_column(
        ForeignKey("iterations.id", ondelete="SET NULL"), index=True
    )
    labeler: Mapped[str] = mapped_column(String(100))
    labeler_version: Mapped[str] = mapped_column(String(100), default="")
    settings_hash: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    energy: Mapped[float | None] = mapped_column(Float)  # eV
    forces = mapped_column(NDArray)  # float64 (N, 3) eV/Å
    stress = mapped_column(NDArray)  # float64 (6,) eV/Å^3, Voigt xx yy zz yz xz xy
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    retry_round: Mapped[int] = mapped_column(Integer, default=0)
    code_version: Mapped[str | None] = mapped_column(String(200))
    effective_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    effective_settings_hash: Mapped[str | None] = mapped_column(String(64))
    wall_time: Mapped[float | None] = mapped_column(Float)  # s
    host: Mapped[str | None] = mapped_column(String(200))
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabelAttempt(Base):
    """One run of the DFT code for a label (the labeler's retry policy may make several per
    claim): outcome (``ok`` or a failure kind), the code's message, wall time and the settings
    it ran with. Unique per (label, retry round, attempt index), so storing the same outcome
    twice adds nothing; never deleted (the history survives ``--retry-failed``)."""

    __tablename__ = "label_attempts"
    __table_args__ = (UniqueConstraint("label_id", "retry_round", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), index=True)
    retry_round: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))  # "ok" or a failure kind
    message: Mapped[str | None] = mapped_column(Text)
    wall_time: Mapped[float | None] = mapped_column(Float)  # s
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings_changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    workdir: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Model(Base):
    """A trained committee: checkpoint location (relative to the data directory) and content
    hash, its training inputs (label ids, seed, the committee it was warm-started from) and
    validation metrics. At most one per iteration; on-demand retrains have no iteration."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("iteration_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    iteration_id: Mapped[int | None] = mapped_column(
        ForeignKey("iterations.id", ondelete="SET NULL"), index=True
    )
    member_count: Mapped[int] = mapped_column(Integer)
    checkpoint_uri: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    training_label_ids = mapped_column(NDArray, nullable=False)  # int64 (n,)
    seed: Mapped[int | None] = mapped_column(Integer)
    parent_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL")
    )
    validation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """An API token, stored only as its SHA-256 hash (looked up through its unique index), with
    its scope (:data:`TOKEN_SCOPES`), optional expiry and when it was last used (updated at
    most about once a minute)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(in_values("scope", TOKEN_SCOPES), name="scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
