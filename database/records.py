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
class CampaignRecord:
    """A campaign row."""

    id: int
    name: str
    config: dict[str, Any]
    status: str
    status_message: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, eq=False)
class IterationRecord:
    """An iteration row; ``max_force_devs`` are the explored frames' uncertainties (eV/Å)."""

    id: int
    campaign_id: int
    index: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    step_timings: dict[str, float]
    n_explored: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    validation: dict[str, Any]
    max_force_devs: np.ndarray | None


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

    def to_atoms(self):
        """The structure as a new ``ase.Atoms`` (no calculator)."""
        from ase import Atoms

        return Atoms(
            numbers=self.numbers.copy(),
            positions=self.positions.copy(),
            cell=self.cell.copy(),
            pbc=self.pbc.copy(),
        )


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
    attempts: int
    wall_time: float | None
    host: str | None
    worker: str | None
    created_at: datetime
    claimed_at: datetime | None
    finished_at: datetime | None


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


@dataclass(frozen=True, eq=False)
class LabelledStructure:
    """A ``done`` label together with its structure (one training example)."""

    label: LabelRecord
    structure: StructureRecord

    def to_atoms(
        self,
        *,
        config_type: str = "pesflow",
        campaign: str | None = None,
        iteration: int | None = None,
    ):
        """``ase.Atoms`` with ``REF_energy`` / ``REF_stress`` / provenance in ``info`` and
        ``REF_forces`` in ``arrays`` (never the bare ``energy`` / ``forces`` keys)."""
        from .extxyz import labelled_atoms

        return labelled_atoms(self, config_type=config_type, campaign=campaign, iteration=iteration)


@dataclass(frozen=True, eq=False)
class ModelRecord:
    """A trained committee checkpoint with its training set and validation metrics."""

    id: int
    campaign_id: int
    iteration_id: int | None
    member_count: int
    checkpoint_uri: str
    checkpoint_sha256: str
    training_label_ids: np.ndarray
    validation: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ApiTokenRecord:
    """An API token (only its SHA-256 hash is stored)."""

    id: int
    name: str
    token_sha256: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IterationMetrics:
    """Per-iteration figures for the dashboard."""

    iteration_id: int
    index: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    step_timings: dict[str, float]
    n_explored: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    accurate_fraction: float | None
    candidate_fraction: float | None
    validation: dict[str, Any]
    n_selected: int
    labels: dict[str, int]  # status -> count, labels requested in this iteration


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
