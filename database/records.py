"""Plain dataclasses returned by :class:`database.Store` (never live ORM objects) and the
small input types its methods take.

Records holding numpy arrays compare by identity (``eq=False``): compare their ``id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LeaseRecord:
    """The lease of the process that runs (or ran) a campaign: its one writer.

    ``alive`` is whether ``expires_at`` was still ahead when the record was read; a dead
    lease is the trace of a holder that stopped without releasing it (killed, host lost)."""

    campaign_id: int
    token: str
    host: str
    pid: int
    purpose: str
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    alive: bool
    process: str | None = None

    @property
    def holder(self) -> str:
        """``host pid <pid> (<purpose>) since <acquired_at>`` for messages."""
        return (
            f"{self.host} pid {self.pid} ({self.purpose}) since "
            f"{self.acquired_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        )


@dataclass(frozen=True)
class CampaignRecord:
    """A campaign row. ``status`` is the effective status: a campaign stored as ``running``
    whose lease has expired (its process died) reads as ``interrupted``, with a message that
    names the lost holder; ``lease`` is the current (or last, dead) holder's lease."""

    id: int
    name: str
    config: dict[str, Any]
    status: str
    status_message: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease: LeaseRecord | None = None


@dataclass(frozen=True)
class IterationRecord:
    """An iteration row with its step rows: ``step_timings`` (step -> accumulated wall time,
    s) and ``completed_steps`` (steps that have finished), and the ``decision`` taken at its
    end."""

    id: int
    campaign_id: int
    index: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    step_timings: dict[str, float]
    completed_steps: frozenset[str]
    n_explored: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    decision: str | None


@dataclass(frozen=True, eq=False)
class WalkerRunRecord:
    """A finished exploration (MD walker, band, registered explorer) of an iteration
    (``status`` done or failed, with ``error``); ``max_force_devs`` float64 (n_frames,) eV/Å, NaN where the deviation was not finite."""

    id: int
    iteration_id: int
    walker: int
    status: str
    model_id: int | None
    temperature: float | None
    pressure: float | None
    ensemble: str | None
    seed: int | None
    n_frames: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    stopped_early: bool
    stop_reason: str | None
    error: str | None
    md_wall_s: float | None
    max_force_devs: np.ndarray | None
    host: str | None
    finished_at: datetime


@dataclass(frozen=True)
class CandidateRecord:
    """A frame a walker offered for labelling (``cut``: the frame at which it was stopped)."""

    id: int
    walker_run_id: int
    iteration_id: int
    structure_id: int
    uncertainty: float
    max_force_dev: float  # eV/Å
    md_step: int | None
    cut: bool


@dataclass(frozen=True)
class WalkerOutcome:
    """What a walker produced, as :meth:`database.Store.record_walker_run` stores it: the
    statistics (``status`` done/failed), per-frame deviations, and the offered frames with
    their origin and uncertainties (``offers``: atoms, Origin, uncertainty, max force
    deviation, cut)."""

    walker: int
    status: str = "done"
    model_id: int | None = None
    temperature: float | None = None
    pressure: float | None = None
    ensemble: str | None = None
    seed: int | None = None
    n_frames: int = 0
    n_accurate: int = 0
    n_candidate: int = 0
    n_failed: int = 0
    stopped_early: bool = False
    stop_reason: str | None = None
    error: str | None = None
    md_wall_s: float | None = None
    max_force_devs: Any = None  # (n_frames,) eV/Å
    host: str | None = None
    offers: tuple = ()  # ((atoms, Origin, uncertainty, max_force_dev, cut), ...)


@dataclass(frozen=True, eq=False)
class StructureRecord:
    """A stored structure (arrays decoded bit-exactly) and where it was first seen."""

    id: int
    hash: str
    natoms: int
    formula: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    source: str
    origin_campaign_id: int | None
    origin_iteration_id: int | None
    walker: str | None
    temperature: float | None
    pressure: float | None
    md_step: int | None
    info: dict[str, Any]
    created_at: datetime
    state: dict[str, Any] = field(default_factory=dict)  # structure_checks.state

    def to_atoms(self):
        """The structure as a new ``ase.Atoms`` (no calculator), with its physical state:
        constraints, initial magnetic moments and charges, tags."""
        from ase import Atoms

        from structure_checks.state import apply_state

        atoms = Atoms(
            numbers=self.numbers.copy(),
            positions=self.positions.copy(),
            cell=self.cell.copy(),
            pbc=self.pbc.copy(),
        )
        return apply_state(atoms, self.state)


@dataclass(frozen=True, eq=False)
class SelectionRecord:
    """A structure selected into a campaign's training data."""

    id: int
    campaign_id: int
    iteration_id: int | None
    structure_id: int
    max_force_dev: float | None
    energy_std: float | None
    forces_std: np.ndarray | None
    reason: str
    strategy: str | None
    created_at: datetime


@dataclass(frozen=True, eq=False)
class LabelRecord:
    """A label row: provenance, state and (when ``done``) energy / forces / stress."""

    id: int
    structure_id: int
    campaign_id: int | None
    iteration_id: int | None
    labeler: str
    labeler_version: str
    settings_hash: str
    settings: dict[str, Any]
    status: str
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    failure_kind: str | None
    failure_message: str | None
    attempts: int  # DFT runs
    wall_time: float | None
    host: str | None
    worker: str | None
    created_at: datetime
    claimed_at: datetime | None
    finished_at: datetime | None
    claims: int = 0
    retry_round: int = 0
    code_version: str | None = None
    effective_settings: dict[str, Any] | None = None
    effective_settings_hash: str | None = None


@dataclass(frozen=True)
class LabelAttemptRecord:
    """One DFT run of a label: ``status`` ``ok`` or a failure kind, the code's message, wall
    time (s), the settings it ran with and what the retry policy changed."""

    id: int
    label_id: int
    retry_round: int
    attempt: int
    status: str
    message: str | None
    wall_time: float | None
    settings: dict[str, Any]
    settings_changes: dict[str, Any]
    workdir: str | None
    host: str | None
    created_at: datetime


@dataclass(frozen=True)
class AttemptInput:
    """A DFT run to record with a label's result or failure (see
    :meth:`database.Store.store_result`)."""

    attempt: int
    status: str  # "ok" or a failure kind
    message: str | None = None
    wall_time: float | None = None  # s
    settings: dict[str, Any] = field(default_factory=dict)
    settings_changes: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = None
    host: str | None = None


@dataclass(frozen=True, eq=False)
class LabelTask:
    """A label claimed for work: what to compute and with which settings."""

    label_id: int
    structure_id: int
    labeler: str
    labeler_version: str
    settings_hash: str
    settings: dict[str, Any]
    attempts: int
    atoms: Any  # ase.Atoms
    retry_round: int = 0
    worker: str | None = None


@dataclass(frozen=True, eq=False)
class LabelledStructure:
    """A ``done`` label together with its structure (one training example); as
    ``ase.Atoms`` with ``REF_*`` keys: :func:`database.extxyz.labelled_atoms`."""

    label: LabelRecord
    structure: StructureRecord


@dataclass(frozen=True, eq=False)
class ModelRecord:
    """A trained committee checkpoint with its training set and validation metrics."""

    id: int
    campaign_id: int
    iteration_id: int | None
    member_count: int
    checkpoint_uri: str  # relative to the data directory (absolute for outside files)
    checkpoint_sha256: str
    training_label_ids: np.ndarray
    validation: dict[str, Any]
    created_at: datetime
    seed: int | None = None
    parent_model_id: int | None = None


@dataclass(frozen=True)
class ApiTokenRecord:
    """An API token (only its SHA-256 hash is stored) and its scope: ``read`` < ``operate`` <
    ``admin`` (:data:`database.models.TOKEN_SCOPES`)."""

    id: int
    name: str
    token_sha256: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """Whether the token has expired at ``now`` (timezone-aware)."""
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Origin:
    """Where an explored structure came from (stored with the structure on first insert)."""

    walker: str | None = None
    temperature: float | None = None  # K
    pressure: float | None = None  # GPa
    md_step: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectionInput:
    """One structure flagged for labelling, with the committee's uncertainty."""

    structure_id: int
    max_force_dev: float | None = None  # eV/Å
    energy_std: float | None = None  # eV
    forces_std: np.ndarray | None = None  # (N,) eV/Å
    reason: str = "candidate"
    strategy: str | None = None
