"""Pydantic v2 request and response models of the REST API (they make the OpenAPI spec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from workflows.service import CampaignSpec

from .redact import PublicText

T = TypeVar("T")

RunStatus = Literal["queued", "running", "completed", "failed", "submitted", "unknown"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(BaseModel):
    """Every 4xx error: one message naming the problem."""

    detail: str | list[dict[str, Any]] = Field(description="What was wrong with the request.")


class Page(BaseModel, Generic[T]):
    """One page of a filtered listing."""

    items: list[T]
    total: int = Field(ge=0, description="Number of matching rows over all pages.")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)


# --------------------------------------------------------------------------- campaigns
class CampaignCreate(BaseModel):
    """A new campaign from a campaign author's config: the sections of the YAML file, with
    `execution` naming an execution profile of the operator (`{profile: NAME}`, default
    `local`) and structures given as `content` (extxyz, xyz, CIF or POSCAR text), generated,
    or as `file` from the operator's import directories."""

    model_config = ConfigDict(extra="forbid")

    config: CampaignSpec = Field(description="Campaign config (see `pesflow init`).")


class CampaignOut(_Out):
    """A campaign with its status and label counts."""

    id: int
    name: str
    status: str = Field(
        description="created, queued, running, paused, interrupted (its process died; resume "
        "continues), cancelled, converged or failed."
    )
    status_message: PublicText  # no server paths or token names (api.redact)
    held_by: str | None = Field(
        default=None,
        description="The process running the campaign (host, pid, purpose, since), if any.",
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    n_iterations: int = Field(ge=0)
    labels: dict[str, int] = Field(description="Label counts by status.")


class RegimeErrors(BaseModel):
    """Validation errors of a committee's mean in one regime (``None``: not measured)."""

    n_frames: int | None = Field(default=None, description="Validation frames of the regime.")
    force_rmse_meV: float | None = Field(default=None, description="Force RMSE, meV/Å.")
    force_mae_meV: float | None = Field(default=None, description="Force MAE, meV/Å.")
    force_max_meV: float | None = Field(
        default=None, description="Largest force-component error, meV/Å."
    )
    energy_rmse_meV: float | None = Field(default=None, description="Energy RMSE, meV/atom.")
    energy_max_meV: float | None = Field(
        default=None, description="Largest energy error, meV/atom."
    )
    stress_rmse_gpa: float | None = Field(
        default=None, description="Stress RMSE, GPa (frames with stress labels)."
    )
    bound_scale: float | None = Field(
        default=None,
        description="The stored 90 % error bound is this times the committee deviation "
        "(the regime's own, else pooled).",
    )
    covered: float | None = Field(
        default=None,
        description="Share of the frames labelled after the previous committee whose max "
        "force error its bound covered.",
    )
    covered_n: int | None = Field(default=None, description="Frames that share is over.")


class CampaignDetail(CampaignOut):
    """A campaign with its config snapshot (runtime bookkeeping removed) and its latest
    model's validation errors per regime."""

    config: dict[str, Any]
    latest_model_id: int | None = Field(default=None, description="The latest trained model.")
    validation_regimes: dict[str, RegimeErrors] = Field(
        default_factory=dict, description="The latest model's validation errors per regime."
    )


class StatusChange(BaseModel):
    """Optional reason recorded with pause / cancel."""

    model_config = ConfigDict(extra="forbid")

    message: str | None = Field(default=None, max_length=2000)


# --------------------------------------------------------------------------- iterations
class IterationOut(BaseModel):
    """Per-iteration metrics."""

    iteration_id: int
    index: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    step_timings: dict[str, float] = Field(description="Wall time per step, s.")
    n_explored: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    accurate_fraction: float | None
    candidate_fraction: float | None
    failed_fraction: float | None
    n_selected: int
    dropped: dict[str, int] = Field(
        default_factory=dict,
        description="Frames the iteration's filters dropped, by reason (e.g. 'unfit geometry: "
        "atoms too close', 'over the cap or too similar').",
    )
    labels: dict[str, int] = Field(description="Labels requested in this iteration by status.")
    labels_new: int = Field(default=0, description="Labels of this iteration that are done.")
    labels_total: int = Field(
        default=0, description="Done labels of this and all earlier iterations."
    )
    val_force_rmse: float | None = Field(description="Validation force RMSE, eV/Å.")
    val_energy_rmse: float | None = Field(description="Validation energy RMSE, eV/atom.")
    decision: str | None
    walkers: int = Field(default=0, description="Walkers that finished (done or failed).")
    walkers_cut: int = Field(default=0, description="Walkers stopped at the upper trust level.")
    walkers_failed: int = Field(default=0, description="Walkers that raised an error.")


class Histogram(BaseModel):
    """Histogram of an iteration's explored-frame uncertainties (max force deviation, eV/Å)."""

    iteration_index: int | None
    counts: list[int]
    edges: list[float]
    n_frames: int
    trust_lo: float | None
    trust_hi: float | None


# --------------------------------------------------------------------------- structures/labels
class StructureOut(BaseModel):
    """A structure selected by the campaign (summary; no coordinates)."""

    id: int
    formula: str
    natoms: int
    source: str
    walker: str | None
    temperature: float | None = Field(description="K")
    md_step: int | None
    iteration_id: int | None = Field(description="Iteration that selected it.")
    reason: str = Field(description="Why it was selected: candidate, bootstrap, validation...")
    max_force_dev: float | None = Field(description="Committee uncertainty, eV/Å.")
    label_status: str | None


class StructureDetail(BaseModel):
    """A structure with its coordinates (Å)."""

    id: int
    formula: str
    natoms: int
    source: str
    numbers: list[int]
    positions: list[list[float]]
    cell: list[list[float]]
    pbc: list[bool]
    state: dict[str, Any] = Field(
        default_factory=dict,
        description="Physical state beyond the geometry (only what is set): constraints (ASE "
        "todict), initial_magmoms (μB), initial_charges (e), tags.",
    )


class LabelOut(BaseModel):
    """A label (reference calculation) without its force array."""

    id: int
    structure_id: int
    iteration_id: int | None
    labeler: str
    status: str
    energy: float | None = Field(description="eV")
    failure_kind: str | None
    failure_message: PublicText
    attempts: int
    wall_time: float | None = Field(description="s")
    created_at: datetime
    finished_at: datetime | None


class LabelDetail(LabelOut):
    """A label with forces (eV/Å) and stress (eV/Å^3, Voigt)."""

    forces: list[list[float]] | None
    stress: list[float] | None


# --------------------------------------------------------------------------- models
class ModelOut(BaseModel):
    """A trained committee."""

    id: int
    campaign_id: int
    iteration_id: int | None
    iteration_index: int | None = Field(
        description="Index of the iteration that trained it (none for an API retrain)."
    )
    member_count: int
    checkpoint_sha256: str
    n_training_labels: int
    validation: dict[str, Any]
    regimes: dict[str, RegimeErrors] = Field(
        default_factory=dict, description="Validation errors per regime (display units)."
    )
    created_at: datetime
    download_url: str
    parity_url: str | None = Field(
        default=None, description="Its validation predictions per regime (parity plots)."
    )


class ParityRegime(BaseModel):
    """Predicted vs reference values of one regime's validation frames."""

    n_frames: int
    energy_pred: list[float] = Field(description="Committee-mean energy per frame, eV/atom.")
    energy_ref: list[float] = Field(description="Reference energy per frame, eV/atom.")
    force_pred: list[float] = Field(
        description="Committee-mean force components (every atom, x y z), eV/Å."
    )
    force_ref: list[float] = Field(description="Reference force components, eV/Å.")


class ParityOut(BaseModel):
    """A model's predictions on its validation set, per regime."""

    model_id: int
    regimes: dict[str, ParityRegime]


# --------------------------------------------------------------------------- runs/actions
class RetrainRequest(BaseModel):
    """Optional overrides of the campaign's training settings for one retrain."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int | None = Field(default=None, ge=1, le=100_000)
    max_time_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class RunOut(BaseModel):
    """Long work submitted by the API (a Prefect flow run or a background job)."""

    id: str
    kind: Literal["campaign", "retrain"]
    campaign_id: int
    status: RunStatus
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: PublicText
    result: dict[str, Any] | None
    prefect_flow_run_id: str | None
    prefect_url: str | None


# --------------------------------------------------------------------------- dashboard
class UncertainStructure(BaseModel):
    """One of the most uncertain selected structures."""

    structure_id: int
    formula: str
    natoms: int
    iteration_index: int | None
    walker: str | None
    temperature: float | None
    max_force_dev: float
    label_status: str | None


class DashboardData(BaseModel):
    """Everything the campaign page draws, in one response."""

    campaign: CampaignOut
    iterations: list[IterationOut]
    labels_new: list[int] = Field(description="Done labels per iteration.")
    labels_cumulative: list[int]
    failures_by_kind: dict[str, list[int]] = Field(
        description="Failed labels per iteration, by failure kind."
    )
    histogram: Histogram
    most_uncertain: list[UncertainStructure]
    models: list[ModelOut]
    runs: list[RunOut]
    poll_seconds: float
    active: bool = Field(description="A run is in progress (the page keeps polling).")


class TokenCheck(BaseModel):
    """Who the bearer token belongs to and what it may do."""

    name: str
    scope: Literal["read", "operate", "admin"] = Field(
        description="read < operate < admin (each includes the ones before it)."
    )
    created_at: datetime
    expires_at: datetime | None = Field(description="When the token stops working; null: never.")


class Health(BaseModel):
    """Liveness and database backend."""

    status: Literal["ok"]
    database: str
    version: str


class FlowRunOut(BaseModel):
    """A Prefect flow run of the campaign's deployment."""

    id: str
    name: str
    state: str | None = Field(description="Prefect state type (COMPLETED, RUNNING, ...).")
    state_name: str | None
    expected_start_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    parameters: dict[str, Any]
    url: str | None = Field(description="Link into the Prefect UI (PESFLOW_PREFECT_UI_URL).")


class FlowRuns(BaseModel):
    """Flow runs of the campaign's scheduled deployment, or why there are none to show."""

    available: bool
    reason: str | None = None
    deployment: str | None = None
    runs: list[FlowRunOut] = Field(default_factory=list)
