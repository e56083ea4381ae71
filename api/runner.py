"""Long work outside requests: a small background runner and a registry of submitted runs.

Embedded default (no Prefect deployment configured): each job is a Prefect flow run (campaign
or retrain, through :mod:`workflows.service`; the temporary local Prefect server starts on first
use) that executes in a thread of this runner, its flow-run id recorded as soon as it starts.
With ``PESFLOW_API_DEPLOYMENT`` set, campaign runs and retrains are submitted to Prefect
deployments (``run_deployment(..., timeout=0)``), a ``pesflow worker`` executes them and their
state is read back from the Prefect API. The registry lives in memory: runs are listed until the API process restarts;
the database, not the registry, holds every result (models, labels, iterations).
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import schemas

__all__ = ["ConflictError", "Run", "Runner"]


class ConflictError(ValueError):
    """The action conflicts with the campaign's state (e.g. a run is already active)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Run:
    """One submitted piece of long work."""

    kind: str
    campaign_id: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"
    submitted_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    prefect_flow_run_id: str | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ("queued", "running", "submitted")


class Runner:
    """Thread-pool runner plus the registry of runs (thread-safe)."""

    def __init__(self, workers: int = 1, prefect_ui_url: str | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pesflow-api")
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self.prefect_ui_url = prefect_ui_url.rstrip("/") if prefect_ui_url else None

    def submit(self, kind: str, campaign_id: int, job: Callable[[Run], dict[str, Any]]) -> Run:
        """Queue ``job(run)``; refuses a second active run of the same kind and campaign."""
        with self._lock:
            for r in self._runs.values():
                if r.campaign_id == campaign_id and r.kind == kind and r.active:
                    raise ConflictError(
                        f"a {kind} run ({r.id}) of campaign {campaign_id} is already {r.status}"
                    )
            run = Run(kind=kind, campaign_id=campaign_id)
            self._runs[run.id] = run
        self._pool.submit(self._execute, run, job)
        return run

    def record(self, run: Run) -> Run:
        """Register a run executed elsewhere (a Prefect deployment run)."""
        with self._lock:
            self._runs[run.id] = run
        return run

    def _execute(self, run: Run, job: Callable[[Run], dict[str, Any]]) -> None:
        run.status, run.started_at = "running", _now()
        try:
            run.result = job(run)
            run.status = "completed"
            run.message = (run.result or {}).get("message")
        except Exception as exc:
            run.status = "failed"
            run.message = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
            traceback.print_exc()
        finally:
            run.finished_at = _now()

    def get(self, run_id: str) -> Run | None:
        """A run by id, or ``None``."""
        with self._lock:
            return self._runs.get(run_id)

    def list(self, campaign_id: int | None = None) -> list[Run]:
        """Runs, newest first (optionally of one campaign)."""
        with self._lock:
            runs = list(self._runs.values())
        runs = [r for r in runs if campaign_id is None or r.campaign_id == campaign_id]
        return sorted(runs, key=lambda r: r.submitted_at, reverse=True)

    def active(self, campaign_id: int) -> bool:
        """Whether the campaign has a queued or running run."""
        return any(r.active for r in self.list(campaign_id))

    def wait(self, run_id: str, timeout: float) -> Run:
        """Block until the run finishes (tests, CLI); raises ``TimeoutError``."""
        import time

        t_end = time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            if run is None:
                raise KeyError(run_id)
            if not run.active:
                return run
            if time.monotonic() > t_end:
                raise TimeoutError(f"run {run_id} still {run.status} after {timeout} s")
            time.sleep(0.05)

    def out(self, run: Run) -> schemas.RunOut:
        """The run as the API shows it."""
        url = None
        if run.prefect_flow_run_id and self.prefect_ui_url:
            url = f"{self.prefect_ui_url}/runs/flow-run/{run.prefect_flow_run_id}"
        return schemas.RunOut(
            id=run.id,
            kind=run.kind,  # type: ignore[arg-type]
            campaign_id=run.campaign_id,
            status=run.status,  # type: ignore[arg-type]
            submitted_at=run.submitted_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            message=run.message,
            result=run.result,
            prefect_flow_run_id=run.prefect_flow_run_id,
            prefect_url=url,
        )

    def shutdown(self, wait: bool = False) -> None:
        """Stop accepting work (running jobs finish in their threads)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
