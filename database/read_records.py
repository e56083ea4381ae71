"""Read-side records: what the dashboard, the API and the summary tables read (no arrays, no
ORM rows). Built by :mod:`database.queries` and :mod:`database.queries_browse` and by
:meth:`database.Store.iteration_summaries`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = [
    "CampaignSummary",
    "HistogramData",
    "IterationMetrics",
    "IterationSummary",
    "LabelRow",
    "ModelRow",
    "PageOf",
    "StructureRow",
    "UncertainRow",
]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _per_mille(x: Any) -> float | None:
    return float(x) * 1000 if isinstance(x, int | float) else None


@dataclass(frozen=True)
class IterationSummary:
    """The one per-iteration summary (dashboard, API, ``pesflow status`` tables).

    Counts are of this iteration; fractions are of its explored frames (``None`` when it
    explored none); ``labels`` counts the labels it requested by status, ``labels_total`` the
    ``done`` labels of this and all earlier iterations; ``val_*_rmse`` in eV/Å and eV/atom
    (``None`` when its model has none); ``step_timings`` wall seconds per step."""

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
    validation: dict[str, Any]  # the iteration's model's validation metrics
    n_selected: int
    labels: dict[str, int]  # status -> count, labels requested in this iteration
    decision: str | None = None
    walkers: int = 0
    walkers_cut: int = 0
    walkers_failed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # filter reason -> frames dropped
    labels_total: int = 0  # done labels of iterations up to and including this one

    @property
    def failed_fraction(self) -> float | None:
        """Fraction of explored frames the committee failed on (``None``: none explored)."""
        return self.n_failed / self.n_explored if self.n_explored else None

    @property
    def labels_new(self) -> int:
        """Labels of this iteration that are done."""
        return self.labels.get("done", 0)

    @property
    def labels_failed(self) -> int:
        """Labels of this iteration that failed."""
        return self.labels.get("failed", 0)

    @property
    def val_force_rmse(self) -> float | None:
        """Validation force RMSE of the iteration's model, eV/Å."""
        return _finite(self.validation.get("val_force_rmse"))

    @property
    def val_energy_rmse(self) -> float | None:
        """Validation energy RMSE of the iteration's model, eV/atom."""
        return _finite(self.validation.get("val_energy_rmse"))

    @property
    def epochs(self) -> int | None:
        """Epochs the iteration's training ran."""
        return self.validation.get("epochs")

    def as_row(self) -> dict[str, Any]:
        """The summary-table row (keys of ``workflows.tables.summary_table``): ``iteration``,
        ``status``, ``labels_new``, ``labels_total``, ``labels_failed``, ``n_explored``,
        ``accurate`` / ``candidate`` / ``failed`` (fractions), ``cut_walkers``,
        ``failed_walkers``, ``val_force_rmse_meV`` (meV/Å), ``val_energy_rmse_meV``
        (meV/atom), ``epochs``, ``max_epochs``, ``time_capped``, ``timings`` (s, 2 decimals)."""
        v = self.validation
        return {
            "iteration": self.index,
            "status": self.status,
            "labels_new": self.labels_new,
            "labels_total": self.labels_total,
            "labels_failed": self.labels_failed,
            "n_explored": self.n_explored,
            "accurate": self.accurate_fraction,
            "candidate": self.candidate_fraction,
            "failed": self.failed_fraction,
            "cut_walkers": self.walkers_cut,
            "failed_walkers": self.walkers_failed,
            "val_force_rmse_meV": _per_mille(v.get("val_force_rmse")),
            "val_energy_rmse_meV": _per_mille(v.get("val_energy_rmse")),
            "epochs": v.get("epochs"),
            "max_epochs": v.get("max_epochs"),
            "time_capped": bool(v.get("time_capped")),
            "timings": {k: round(t, 2) for k, t in self.step_timings.items()},
        }


IterationMetrics = IterationSummary
"""Former name of :class:`IterationSummary`."""


@dataclass(frozen=True)
class CampaignSummary:
    """A campaign with its effective status, who holds it, iteration and label counts (by
    status) and its stored config (with runtime keys)."""

    id: int
    name: str
    status: str
    status_message: str | None
    held_by: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    n_iterations: int
    labels: dict[str, int]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HistogramData:
    """Histogram of one iteration's explored-frame uncertainties (max force deviation, eV/Å);
    ``len(edges) == len(counts) + 1``; trust window bounds in eV/Å when configured."""

    iteration_index: int | None
    counts: list[int]
    edges: list[float]
    n_frames: int
    trust_lo: float | None
    trust_hi: float | None


@dataclass(frozen=True)
class PageOf(Generic[T]):
    """One page of a filtered listing: ``total`` matching rows over all pages."""

    items: list[T]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class StructureRow:
    """A selected structure (no coordinates): why and when it was selected, its uncertainty
    (eV/Å), the status of its newest label (``None``: unlabelled)."""

    id: int
    formula: str
    natoms: int
    source: str
    walker: str | None
    temperature: float | None  # K
    md_step: int | None
    iteration_id: int | None
    reason: str
    max_force_dev: float | None
    label_status: str | None


@dataclass(frozen=True)
class UncertainRow:
    """One of the most uncertain selected structures (uncertainty in eV/Å)."""

    structure_id: int
    formula: str
    natoms: int
    iteration_index: int | None
    walker: str | None
    temperature: float | None
    max_force_dev: float | None
    label_status: str | None


@dataclass(frozen=True)
class LabelRow:
    """A label without its arrays (energy eV, wall time s, times UTC)."""

    id: int
    structure_id: int
    iteration_id: int | None
    labeler: str
    status: str
    energy: float | None
    failure_kind: str | None
    failure_message: str | None
    attempts: int
    wall_time: float | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ModelRow:
    """A trained committee without its label-id array (``checkpoint_uri`` relative to the data
    directory, absolute for outside files)."""

    id: int
    campaign_id: int
    iteration_id: int | None
    iteration_index: int | None
    member_count: int
    checkpoint_sha256: str
    checkpoint_uri: str
    n_training_labels: int
    validation: dict[str, Any]
    created_at: datetime
