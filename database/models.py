"""SQLAlchemy 2.0 ORM models: the schema of the pesflow database.

Tables: ``campaigns``, ``iterations``, ``structures``, ``selections``, ``labels``, ``models``,
``api_tokens``. Arrays are :class:`database.arrays.NDArray` columns (compact binary).
The Alembic migrations in ``database/migrations`` create exactly this schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .arrays import NDArray

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CAMPAIGN_STATUSES = ("created", "running", "paused", "cancelled", "converged", "failed")
ITERATION_STATUSES = ("created", "running", "done", "failed")
LABEL_STATUSES = ("pending", "running", "done", "failed")
FAILURE_KINDS = (
    "scf_unconverged",
    "crashed",
    "timeout",
    "invalid_input",
    "missing_executable",
    "other",
)
ITERATION_STEPS = ("train", "explore", "select", "label", "record", "decide")


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable names for migrations)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Campaign(Base):
    """An active-learning campaign: a name, the validated config snapshot and a status."""

    __tablename__ = "campaigns"
    __table_args__ = (CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status"),)

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


class Iteration(Base):
    """One loop of a campaign: step timings, selection counts, validation errors and the
    explored frames' max force deviations (for the dashboard histogram)."""

    __tablename__ = "iterations"
    __table_args__ = (
        UniqueConstraint("campaign_id", "index"),
        CheckConstraint(_in("status", ITERATION_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="created")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    step_timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    n_explored: Mapped[int] = mapped_column(Integer, default=0)
    n_accurate: Mapped[int] = mapped_column(Integer, default=0)
    n_candidate: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    validation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_force_devs = mapped_column(NDArray)  # float64 (n_explored,), eV/Å


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
    rows a failure kind (database check constraints)."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("structure_id", "labeler", "settings_hash"),
        CheckConstraint(_in("status", LABEL_STATUSES), name="status"),
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
    wall_time: Mapped[float | None] = mapped_column(Float)  # s
    host: Mapped[str | None] = mapped_column(String(200))
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Model(Base):
    """A trained committee: checkpoint location and hash, the training set (label ids) and
    validation metrics."""

    __tablename__ = "models"

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
    validation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """An API token, stored only as its SHA-256 hash."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
