"""The ``execution`` section: where and how a campaign runs. Operator territory.

A config either names an execution profile, ``execution: {profile: NAME}``, defined by the
operator in the server settings (:mod:`workflows.profiles`), or — in a local config run by the
operator's own CLI — gives the section inline. Configs sent to the API can only name a profile
(:class:`ProfileRef`), because what this section holds is code and addresses: a Dask cluster
class (imported), its keyword arguments (a ``preload`` is executed), a scheduler address
(connected to), the DFT command line and launcher (executed) and scratch/pseudopotential paths.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from .config_base import PosFloat, _Section

__all__ = [
    "PROFILE_NAME",
    "DaskConfig",
    "ExecutionConfig",
    "LabelerExecution",
    "ProfileRef",
]

PROFILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""What an execution profile's name may look like."""


class DaskConfig(_Section):
    """DaskTaskRunner arguments (prefect-dask)."""

    address: str | None = Field(default=None, description="Existing scheduler address.")
    cluster_class: str | None = Field(default=None, description="e.g. dask_jobqueue.SLURMCluster.")
    cluster_kwargs: dict[str, Any] = Field(default_factory=dict, description="Cluster arguments.")
    adapt_kwargs: dict[str, Any] | None = Field(default=None, description="Adaptive scaling.")


class LabelerExecution(_Section):
    """How one labeler backend runs under this execution section (the operator's part of the
    labeler: :class:`dft_adapters.Executor` plus operator-only settings such as
    ``pseudo_dir``)."""

    command: str | None = Field(default=None, description="The code's command line, e.g. 'pw.x'.")
    launcher: str | None = Field(default=None, description="MPI launcher, e.g. 'srun'.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    scratch_root: str | None = Field(default=None, description="Parent of scratch directories.")
    timeout: PosFloat | None = Field(default=None, description="Wall-clock limit per attempt, s.")
    keep_success: bool = Field(default=True, description="Keep a successful attempt's files.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Operator-only labeler settings (server paths), e.g. {pseudo_dir: ...}.",
    )

    def executor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`dft_adapters.Executor`."""
        return self.model_dump(exclude={"settings"})


class ExecutionConfig(_Section):
    """Where tasks run: an execution profile's name, or (local configs, profiles) the section
    itself."""

    profile: str | None = Field(
        default=None,
        pattern=PROFILE_NAME,
        description="Name of an execution profile defined by the operator; excludes the "
        "other keys.",
    )
    task_runner: Literal["threads", "dask"] = Field(default="threads", description="Runner.")
    max_workers: int = Field(default=2, ge=1, description="Thread-pool size.")
    dask: DaskConfig | None = Field(default=None, description="Dask runner settings.")
    label_slots: int | None = Field(
        default=None,
        ge=1,
        description="Labels in flight (running or queued in the task runner); a slot is "
        "refilled as soon as its label finishes. Default: twice the runner's concurrency "
        "(max_workers, or the Dask cluster's worker threads when the config gives them), "
        "else 16.",
    )
    labelers: dict[str, LabelerExecution] = Field(
        default_factory=dict,
        description="Per labeler backend (by name): command, launcher, env, scratch_root, "
        "timeout and operator-only settings such as pseudo_dir.",
    )

    @model_validator(mode="after")
    def _profile_alone(self) -> ExecutionConfig:
        others = sorted(self.model_fields_set - {"profile"})
        if self.profile is not None and others:
            raise ValueError(
                f"give either 'profile' or an inline execution section, not both (got profile "
                f"and {', '.join(others)})"
            )
        return self

    @field_validator("labelers")
    @classmethod
    def _known_labelers(cls, v: dict[str, LabelerExecution]) -> dict[str, LabelerExecution]:
        from dft_adapters import available_labelers, labeler_class

        for name, lx in v.items():
            if name not in available_labelers():
                raise ValueError(
                    f"unknown labeler {name!r}; available: {', '.join(available_labelers())}"
                )
            allowed = labeler_class(name).settings_cls.operator_fields()
            extra = sorted(set(lx.settings) - allowed)
            if extra:
                raise ValueError(
                    f"{name}.settings: {extra[0]!r} is not an operator setting of {name!r} "
                    f"(operator settings: {', '.join(sorted(allowed)) or 'none'}); physics "
                    "settings belong to the campaign config"
                )
        return v

    @property
    def is_profile(self) -> bool:
        """True when the section only names a profile."""
        return self.profile is not None

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: Any) -> Any:
        """A profile reference dumps as ``{profile: NAME}``; an inline section leaves out
        ``profile`` and empty ``labelers`` (snapshots of older configs stay identical)."""
        data = handler(self)
        if not isinstance(data, dict):
            return data
        if self.profile is not None:
            return {"profile": self.profile}
        data.pop("profile", None)
        if not data.get("labelers", 1):
            data.pop("labelers", None)
        return data


class ProfileRef(_Section):
    """The ``execution`` section of a config sent to the API: the name of an execution profile
    the operator defined (``PESFLOW_EXECUTION_PROFILES``; ``local`` always exists)."""

    profile: str = Field(
        default="local",
        pattern=PROFILE_NAME,
        description="Execution profile (task runner, cluster, DFT executables, server paths), "
        "defined by the operator.",
    )

    @model_validator(mode="before")
    @classmethod
    def _only_profile(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = [k for k in data if k != "profile"]
            if extra:
                raise ValueError(
                    f"unknown field {str(extra[0])!r} — campaign configs sent to the API name "
                    "an execution profile (execution: {profile: NAME}); the operator defines "
                    "profiles"
                )
        return data
