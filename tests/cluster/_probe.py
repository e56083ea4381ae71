"""Instrumentation for the SLURM tests, writing JSON lines to ``$PESFLOW_PROBE_LOG``, each with
the process id and the SLURM job id of the process that wrote it:

- the ``emt_probe`` oracle: EMT sleeping ``delay`` s, recording when each calculation starts
  and finishes (with the structure's fingerprint) — oracle calls counted without relying on
  what pesflow's database says;
- on a Dask worker that imports this module as a preload (``--preload tests.cluster._probe``,
  in ``cluster_kwargs.worker_extra_args``), a worker plugin recording each task it starts
  executing (its Dask key: ``<prefect task name>-<task run id>``).

The labeler is registered only where it is used: in a Dask worker by the preload hook, in the
test process inside the tests (``dft_adapters.testing.registered``), so that other test files
collected in the same process (the labeler contract's "every registered labeler" check) never
see it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms
from distributed import WorkerPlugin

from dft_adapters import register
from dft_adapters.base import RawLabel
from dft_adapters.mock import EMTLabeler, EMTSettings, structure_fingerprint
from dft_adapters.settings import Settings

__all__ = ["ENV", "ProbeEMTLabeler", "ProbeSettings", "TaskLog", "dask_setup", "read_events"]

ENV = "PESFLOW_PROBE_LOG"
"""The environment variable naming the event file."""


def record(event: str, **fields: Any) -> None:
    """Append one event (with pid, host, SLURM job id and time) to ``$PESFLOW_PROBE_LOG``."""
    path = os.environ.get(ENV)
    if not path:
        return
    row = {
        "event": event,
        **fields,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job": os.environ.get("SLURM_JOB_ID"),
        "t": time.time(),
    }
    with open(path, "a") as fh:  # one short line per write: appends do not interleave
        fh.write(json.dumps(row) + "\n")


class TaskLog(WorkerPlugin):
    """Records each task this Dask worker starts executing (event ``task``, its ``key``)."""

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Dask's hook on every task state change of this worker."""
        if finish == "executing":
            record("task", key=str(key))


async def dask_setup(worker: Any) -> None:
    """Dask preload hook: install :class:`TaskLog` on the worker."""
    register(ProbeEMTLabeler)
    await worker.plugin_add(TaskLog(), name="pesflow-probe-tasks")


@dataclass(frozen=True)
class ProbeSettings(EMTSettings):
    """EMT's settings plus ``delay``: seconds each calculation sleeps (a DFT run's length)."""

    delay: float = 0.0


class ProbeEMTLabeler(EMTLabeler):
    """EMT sleeping ``settings.delay`` s per calculation and recording its start and finish in
    ``$PESFLOW_PROBE_LOG``."""

    name: ClassVar[str] = "emt_probe"
    settings_cls: ClassVar[type[Settings]] = ProbeSettings

    def _compute(
        self, atoms: Atoms, settings: Settings, directory: Path | None, attempt: int
    ) -> RawLabel:
        record("start", structure=structure_fingerprint(atoms))
        time.sleep(getattr(settings, "delay", 0.0))
        raw = super()._compute(atoms, settings, directory, attempt)
        record("finish", structure=structure_fingerprint(atoms))
        return raw


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events recorded so far (a partly written last line is left out)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
