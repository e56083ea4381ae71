"""Task runners from the campaign's ``execution`` section: a thread pool, or Dask.

Dask goes through ``prefect_dask.DaskTaskRunner``, in one of four shapes, all from the config::

    execution: {task_runner: threads, max_workers: 4}              # thread pool (default)
    execution: {task_runner: dask, max_workers: 2}                 # LocalCluster, 2 processes
    execution:
      task_runner: dask
      dask: {cluster_class: local, cluster_kwargs: {n_workers: 2, threads_per_worker: 1}}
    execution:
      task_runner: dask
      dask: {address: "tcp://10.0.0.5:8786"}                       # an existing scheduler
    execution:
      task_runner: dask
      dask:
        cluster_class: slurm                                       # or pbs (dask-jobqueue)
        cluster_kwargs: {queue: compute, cores: 32, processes: 4, memory: 120GB,
                         walltime: "04:00:00", job_script_prologue: ["module load vasp"]}
        adapt_kwargs: {minimum_jobs: 0, maximum_jobs: 8}

A config sent to the API only names an execution profile, ``execution: {profile: NAME}``, one of
the operator's sections of this shape (:mod:`workflows.profiles`); every function here resolves
it first, from the settings of the process it runs in (:func:`resolve`).

``cluster_class`` accepts the aliases ``local``, ``slurm``, ``pbs`` or a dotted import path.
For dask-jobqueue classes the keyword arguments are checked against the job class here, so a
typo fails before any job is submitted (:class:`ClusterConfigError`, one line).
:func:`render_job_script` shows the batch script a SLURM/PBS cluster would submit, without
submitting anything. A DFT code that is itself an MPI job over many nodes is launched by the
labeler's command template (``srun --mpi=pmix -n N`` / ``mpirun``), not spread over a Dask
worker's threads: give such a labeler one single-threaded Dask worker per batch job
(``processes: 1``, ``cores: 1``: one label at a time per job) and book the MPI layout's CPUs
with ``job_cpu: N`` (``tests/cluster/test_slurm.py`` runs pw.x so on a real SLURM).
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from .config import ConfigError, ExecutionConfig
from .profiles import resolve_execution

__all__ = [
    "CLUSTER_ALIASES",
    "ClusterConfigError",
    "cluster_class_path",
    "concurrency",
    "describe",
    "job_class",
    "label_slots",
    "make_task_runner",
    "render_job_script",
    "resolve",
    "share_api_with_workers",
    "task_runner_kwargs",
]

CLUSTER_ALIASES: dict[str, str] = {
    "local": "distributed.LocalCluster",
    "slurm": "dask_jobqueue.SLURMCluster",
    "pbs": "dask_jobqueue.PBSCluster",
}

# Keyword arguments of JobQueueCluster itself (not of its job class).
_CLUSTER_ONLY = {
    "n_workers",
    "job_cls",
    "loop",
    "security",
    "shared_temp_directory",
    "silence_logs",
    "name",
    "asynchronous",
    "dashboard_address",
    "host",
    "scheduler_options",
    "scheduler_cls",
    "interface",
    "protocol",
    "config_name",
}


class ClusterConfigError(ConfigError):
    """An ``execution`` section that cannot build a task runner (the message is one line)."""


def resolve(execution: ExecutionConfig) -> ExecutionConfig:
    """The inline section itself, or the execution profile it names (this process's settings;
    :class:`ConfigError` for an unknown profile)."""
    return resolve_execution(execution)


def cluster_class_path(name: str) -> str:
    """The import path of a cluster class given by alias (``local``/``slurm``/``pbs``) or path."""
    return CLUSTER_ALIASES.get(name.lower(), name)


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if not module:
        raise ClusterConfigError(
            f"execution.dask.cluster_class: {path!r} is not a dotted path "
            f"or one of {sorted(CLUSTER_ALIASES)}"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        hint = " (pip install 'pesflow[cluster]')" if module.startswith("dask_jobqueue") else ""
        raise ClusterConfigError(
            f"execution.dask.cluster_class: cannot import {path!r}: {exc}{hint}"
        ) from None


def job_class(cluster_class: str) -> type | None:
    """The dask-jobqueue job class of a jobqueue cluster (``None`` for other clusters)."""
    cls = _import(cluster_class_path(cluster_class))
    return getattr(cls, "job_cls", None)


def _check_job_kwargs(cluster_class: str, kwargs: dict[str, Any]) -> None:
    job_cls = job_class(cluster_class)
    if job_cls is None:
        return
    allowed = set(_CLUSTER_ONLY)
    for klass in job_cls.__mro__:
        if "__init__" in vars(klass):
            allowed |= set(inspect.signature(klass.__init__).parameters) - {
                "self",
                "kwargs",
                "base_class_kwargs",
            }
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], sorted(allowed), n=1, cutoff=0.5)
        raise ClusterConfigError(
            f"execution.dask.cluster_kwargs: unknown argument {unknown[0]!r} for "
            f"{cluster_class_path(cluster_class)}"
            + (f" — did you mean {hint[0]!r}?" if hint else "")
        )


def task_runner_kwargs(execution: ExecutionConfig) -> dict[str, Any]:
    """Keyword arguments of ``DaskTaskRunner`` for a Dask ``execution`` section (pure: builds
    nothing, imports only the cluster class to check its arguments)."""
    execution = resolve(execution)
    if execution.task_runner != "dask":
        raise ClusterConfigError("execution.task_runner is not 'dask'")
    d = execution.dask
    if d is not None and d.address:
        if d.cluster_class or d.cluster_kwargs or d.adapt_kwargs:
            raise ClusterConfigError(
                "execution.dask: give either 'address' (an existing "
                "scheduler) or a cluster_class/cluster_kwargs, not both"
            )
        return {"address": d.address}
    cls_name = d.cluster_class if d is not None and d.cluster_class else "local"
    path = cluster_class_path(cls_name)
    if d is not None and d.cluster_kwargs:
        ckw = dict(d.cluster_kwargs)
    elif path == CLUSTER_ALIASES["local"]:
        ckw = {"n_workers": execution.max_workers, "threads_per_worker": 1, "processes": True}
    else:
        ckw = {}
    if path == CLUSTER_ALIASES["local"]:
        ckw.setdefault("dashboard_address", None)  # no web dashboard port per campaign run
    else:
        if "partition" in ckw and path == CLUSTER_ALIASES["slurm"]:
            ckw.setdefault("queue", ckw.pop("partition"))  # SLURM's word for a queue
        _check_job_kwargs(path, ckw)
    kwargs: dict[str, Any] = {"cluster_class": path, "cluster_kwargs": ckw}
    if d is not None and d.adapt_kwargs:
        kwargs["adapt_kwargs"] = dict(d.adapt_kwargs)
    return kwargs


def share_api_with_workers() -> str | None:
    """Without a Prefect server (``PREFECT_API_URL`` unset) start the temporary local API now
    (:class:`workflows.local_api.LocalAPI`, stopped at exit) and export its URL, so that the
    processes of a local Dask cluster report to it instead of each starting a temporary server
    of its own (docs/decisions/0004-local-prefect-api-for-dask.md). ``pesflow run`` has already
    started one (:func:`workflows.local_api.prefect_api`), so this is then a no-op.
    Returns the URL exported, or ``None`` when a server was configured already."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    from .local_api import start_local_api

    if PREFECT_API_URL.value():
        return None
    api = start_local_api()
    if api is None:
        return None
    url = api.wait(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    os.environ["PREFECT_API_URL"] = url
    return url


def make_task_runner(execution: ExecutionConfig) -> Any:
    """The configured Prefect task runner: ``ThreadPoolTaskRunner(max_workers)`` or
    :class:`~workflows.dask_runner.PesflowDaskTaskRunner` (``prefect_dask.DaskTaskRunner``
    shipping Prefect's settings once per flow run) with :func:`task_runner_kwargs` (for a
    local cluster without a Prefect server, :func:`share_api_with_workers` first)."""
    execution = resolve(execution)
    if execution.task_runner != "dask":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=execution.max_workers)
    kwargs = task_runner_kwargs(execution)
    if kwargs.get("cluster_class") == CLUSTER_ALIASES["local"]:
        share_api_with_workers()
    from .dask_runner import PesflowDaskTaskRunner

    return PesflowDaskTaskRunner(**kwargs)


def concurrency(execution: ExecutionConfig) -> int | None:
    """How many tasks the configured runner runs at once, where the config says: ``max_workers``
    for threads and for the default local cluster; ``n_workers × threads_per_worker`` for a
    local cluster given by ``cluster_kwargs``; for a jobqueue cluster its worker threads:
    ``maximum_jobs × cores`` (adaptive; a job's ``processes`` workers share its ``cores`` as
    threads), ``maximum`` or ``n_workers`` workers × ``cores // processes`` (one thread per
    worker when ``cores`` is not in the config). ``None`` when unknown (a scheduler
    address)."""
    execution = resolve(execution)
    if execution.task_runner != "dask":
        return execution.max_workers
    d = execution.dask
    if d is None or (not d.address and not d.cluster_class and not d.cluster_kwargs):
        return execution.max_workers
    if d.address:
        return None
    ckw = d.cluster_kwargs
    if cluster_class_path(d.cluster_class or "local") == CLUSTER_ALIASES["local"]:
        if "n_workers" not in ckw:
            return None
        return max(1, int(ckw["n_workers"]) * int(ckw.get("threads_per_worker", 1)))
    # dask-jobqueue: a job runs `processes` workers of cores // processes threads each
    processes = max(1, int(ckw.get("processes", 1)))
    per_worker = max(1, int(ckw["cores"]) // processes) if "cores" in ckw else 1
    adapt = d.adapt_kwargs or {}
    if "maximum_jobs" in adapt:
        return max(1, int(adapt["maximum_jobs"]) * processes * per_worker)
    if "maximum" in adapt:
        return max(1, int(adapt["maximum"]) * per_worker)
    if "n_workers" in ckw:
        return max(1, int(ckw["n_workers"]) * per_worker)
    return None


def label_slots(execution: ExecutionConfig) -> int:
    """How many labels the label step keeps in flight (running or queued in the task runner):
    ``execution.label_slots`` if given, else twice the runner's :func:`concurrency` (16 when
    unknown). With one label queued behind each running one, a worker that frees starts the
    next label at once, without a round trip through the flow (claim, submit, schedule)."""
    execution = resolve(execution)
    if execution.label_slots is not None:
        return execution.label_slots
    n = concurrency(execution)
    return 16 if n is None else 2 * n


def render_job_script(
    execution: ExecutionConfig, scheduler_address: str = "tcp://scheduler:8786"
) -> str:
    """The batch script a SLURM/PBS cluster of this config submits per job (nothing is
    submitted and no scheduler is started)."""
    kwargs = task_runner_kwargs(execution)
    job_cls = job_class(kwargs["cluster_class"])
    if job_cls is None:
        raise ClusterConfigError(
            f"execution.dask.cluster_class {kwargs['cluster_class']!r} submits no batch jobs"
        )
    ckw = {k: v for k, v in kwargs["cluster_kwargs"].items() if k not in _CLUSTER_ONLY}
    return job_cls(scheduler=scheduler_address, name="pesflow-dask", **ckw).job_script()


def describe(execution: ExecutionConfig) -> str:
    """One line naming the task runner, e.g. ``dask: dask_jobqueue.SLURMCluster (adaptive 0-8
    jobs)``."""
    execution = resolve(execution)
    if execution.task_runner != "dask":
        return f"threads: {execution.max_workers} worker thread(s)"
    kwargs = task_runner_kwargs(execution)
    if "address" in kwargs:
        return f"dask: scheduler at {kwargs['address']}"
    text = f"dask: {kwargs['cluster_class']}"
    adapt = kwargs.get("adapt_kwargs")
    if adapt:
        lo = adapt.get("minimum_jobs", adapt.get("minimum", 0))
        hi = adapt.get("maximum_jobs", adapt.get("maximum", "?"))
        text += f" (adaptive {lo}-{hi} {'jobs' if 'maximum_jobs' in adapt else 'workers'})"
    elif "n_workers" in kwargs["cluster_kwargs"]:
        text += f" ({kwargs['cluster_kwargs']['n_workers']} workers)"
    return text
