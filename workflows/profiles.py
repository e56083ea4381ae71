"""Execution profiles: the operator's named ``execution`` sections.

The operator lists them in a YAML file named by ``PESFLOW_EXECUTION_PROFILES`` (a setting of
every process that runs campaigns: the CLI, the API server, a Prefect deployment worker), a
mapping of profile name to an execution section as a local config would give it::

    local:                      # redefines the built-in profile (threads, 2 workers)
      max_workers: 4
    slurm-qe:
      task_runner: dask
      dask:
        cluster_class: slurm
        cluster_kwargs: {queue: compute, cores: 1, job_cpu: 32, processes: 1,
                         memory: 120GB, walltime: "04:00:00"}
        adapt_kwargs: {minimum_jobs: 0, maximum_jobs: 8}
      label_slots: 16
      labelers:
        espresso:
          command: pw.x -nk 2
          launcher: srun --mpi=pmix -n 32
          env: {OMP_NUM_THREADS: "1"}
          timeout: 3600
          settings: {pseudo_dir: /opt/pseudo}

A campaign config names one (``execution: {profile: slurm-qe}``); it is resolved where the task
runner and the labeler are built (:func:`resolve_execution`), from that process's settings. The
built-in profile ``local`` (threads, 2 workers) exists unless the file redefines it. The file is
validated when first needed and again only when it changes; every problem is one line
(:class:`ProfilesError`).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config_base import ConfigError, format_errors
from .config_execution import PROFILE_NAME, ExecutionConfig

__all__ = [
    "BUILTIN_PROFILES",
    "ProfilesError",
    "execution_profiles",
    "load_profiles",
    "resolve_execution",
]

BUILTIN_PROFILES: dict[str, ExecutionConfig] = {
    "local": ExecutionConfig(task_runner="threads", max_workers=2)
}
"""Profiles that exist without a profiles file."""

_lock = threading.Lock()
_cache: dict[tuple[str, int, int], dict[str, ExecutionConfig]] = {}


class ProfilesError(ConfigError):
    """The operator's profiles file is invalid (the message is one line naming it)."""


def load_profiles(path: str | Path) -> dict[str, ExecutionConfig]:
    """The profiles of the YAML file ``path`` with the built-in ones (the file wins);
    raises :class:`ProfilesError`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ProfilesError(f"PESFLOW_EXECUTION_PROFILES: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfilesError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProfilesError(
            " ".join(f"{path}: YAML syntax error{where}: {getattr(exc, 'problem', exc)}".split())
        ) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ProfilesError(
            f"{path}: must map profile names to execution sections, got {type(data).__name__}"
        )
    profiles = dict(BUILTIN_PROFILES)
    for name, section in data.items():
        if not isinstance(name, str) or not re.fullmatch(PROFILE_NAME, name):
            raise ProfilesError(f"{path}: profile name {name!r}: letters, digits, _ . - only")
        if not isinstance(section, dict):
            raise ProfilesError(
                f"{path}: profile {name!r}: must be a mapping (an execution section)"
            )
        if "profile" in section:
            raise ProfilesError(f"{path}: profile {name!r}: a profile cannot name another profile")
        try:
            profiles[name] = ExecutionConfig.model_validate(section)
        except ValidationError as exc:
            raise ProfilesError(
                format_errors(exc.errors(), f"{path}: profile {name!r}", ExecutionConfig)
            ) from None
    return profiles


def execution_profiles(settings: Any = None) -> dict[str, ExecutionConfig]:
    """The profiles this process knows: ``settings.execution_profiles`` (default: from
    :func:`workflows.settings.get_settings`) plus the built-in ones. Cached per file version."""
    if settings is None:
        from .settings import get_settings

        settings = get_settings()
    path = settings.execution_profiles
    if path is None:
        return dict(BUILTIN_PROFILES)
    path = Path(path).expanduser().absolute()
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(path), -1, -1)
    with _lock:
        cached = _cache.get(key)
    if cached is None:
        cached = load_profiles(path)
        with _lock:
            _cache.clear()
            _cache[key] = cached
    return dict(cached)


def resolve_execution(execution: ExecutionConfig, settings: Any = None) -> ExecutionConfig:
    """The execution section to use: ``execution`` itself when inline, else the profile it
    names (:func:`execution_profiles`). Raises :class:`ConfigError` naming an unknown profile
    and the available ones."""
    if execution.profile is None:
        return execution
    profiles = execution_profiles(settings)
    found = profiles.get(execution.profile)
    if found is None:
        raise ConfigError(
            f"execution.profile: unknown execution profile {execution.profile!r}; available: "
            f"{', '.join(sorted(profiles))} (the operator defines profiles in "
            "PESFLOW_EXECUTION_PROFILES)"
        )
    return found
