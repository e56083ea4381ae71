"""Kill -9 a running 4-walker campaign (its whole process group) in each step and resume it
each time, on SQLite and on PostgreSQL, until it converges; check that nothing is labelled or
computed twice, no label is lost, one model per iteration, and walkers recorded before a kill
are not rerun.

The kills are placed with hooks in the campaign process (see :data:`LAUNCHER`): at a chosen
store call the process writes a marker file and stops there, the test waits for the moment it
wants (e.g. every other label finished), then kills the process group with SIGKILL. So each kill
lands in the step it is meant for, on every machine, without racing a poll against the step:

1. bootstrap labelling: one label's DFT run has finished (its ``outcome.json`` is written) but
   the result is not yet in the database — the resume must store it without running DFT again;
2. training: the checkpoint file is written, its model row is not;
3. exploration: 3 of the 4 walkers recorded, the fourth finished its MD but is not recorded;
4. labelling of iteration 1 (its select step completed), one finished label not yet stored.

Select and decide are single transactions (:meth:`database.Store.record_picks`,
:meth:`database.Store.finish_iteration`), so a kill there is the same as one just before or
just after them; they are not targeted.

DFT runs are counted by the instrumented labeler (:mod:`tests.workflows._counting`), below
anything pesflow stores. The counter logs a run when it *starts*, so a run killed half-way
would (rightly) be run again and counted twice; the kills above happen when no DFT run is half
done, so every structure is computed exactly once.

The processes use the session's Prefect API (``prefect_harness``) instead of starting their
own temporary server each (8-13 s per process on 2 cores); ``test_processes.py`` kills one that
runs its own. The helpers (process start / kill / check-gone, database per backend, the
launcher) are shared with ``test_processes.py``.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._campaigns import write_config
from ._counting import dft_runs

ROOT = Path(__file__).resolve().parents[2]

LAUNCHER = r"""
import os, sys, threading, time
from pathlib import Path
import tests.workflows._counting as counting
import pesflow.cli
block = os.environ.get("PESFLOW_TEST_BLOCK")
if block:  # "<Store method>:<n>:<iteration index or empty>": stop at the n-th matching call
    from database import Store
    method, nth, index = block.split(":")
    real = getattr(Store, method)
    lock, calls = threading.Lock(), [0]
    def hooked(self, *args, **kwargs):
        if index:  # store_result of a label of that iteration only
            label = self.get_label(args[0])
            if self.get_iteration_by_id(label.iteration_id).index != int(index):
                return real(self, *args, **kwargs)
        with lock:
            calls[0] += 1
            hit = calls[0] == int(nth)
        if hit:
            Path(os.environ["PESFLOW_TEST_BLOCKED"]).write_text(repr(tuple(args[:1])))
            while True:
                time.sleep(3600)
        return real(self, *args, **kwargs)
    setattr(Store, method, hooked)
ready = os.environ.get("PESFLOW_TEST_READY")
if ready:  # imports done: say so, and start when the test says go
    Path(ready).touch()
    go = Path(os.environ["PESFLOW_TEST_GO"])
    while not go.exists():
        time.sleep(0.005)
counting.cli()
"""
"""``python -c LAUNCHER ARGS``: ``pesflow ARGS`` with the DFT runs counted
(``PESFLOW_TEST_DFT_LOG``), optionally stopping at a store call (``PESFLOW_TEST_BLOCK``, marker
``PESFLOW_TEST_BLOCKED``) and optionally starting only on a go file (``PESFLOW_TEST_READY`` /
``PESFLOW_TEST_GO``)."""


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(p.name))
    return out


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (the CLI, its Prefect server, its workers) and reap
    ``proc``, so that its pid is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Proc:
    """A started ``pesflow`` process: its Popen, output files and blocking marker."""

    popen: subprocess.Popen
    name: str
    stdout: Path
    stderr: Path
    marker: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, limit: int = 4000) -> str:
        out = self.stdout.read_text(errors="replace") if self.stdout.exists() else ""
        err = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return f"--- {self.name} stdout:\n{out[-limit:]}\n--- {self.name} stderr:\n{err[-limit:]}"

    def log(self, data: Path) -> str:
        """The command's log file (``<data>/logs/pesflow-<UTC>-<pid>.log``)."""
        (path,) = (data / "logs").glob(f"pesflow-*-{self.pid}.log")
        return path.read_text()

    def blocked_at(self) -> tuple:
        """The first argument of the store call the process stopped at."""
        return ast.literal_eval(self.marker.read_text())


@dataclass
class Site:
    """A data directory and database (SQLite file or PostgreSQL schema) that ``pesflow``
    processes are started on; every process started is killed and checked gone at the end."""

    tmp: Path
    backend: str
    db_url: str  # the URL the processes use (PESFLOW_DATABASE_URL for PostgreSQL)
    data: Path
    dft_log: Path
    api_url: str | None = None  # a running Prefect API; None: each process starts its own
    procs: list[Proc] = field(default_factory=list)
    _store: object = None

    def env(self, own_prefect: bool = False, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PESFLOW_"))}
        env.update(
            PESFLOW_DATA_DIR=str(self.data),
            PREFECT_HOME=str(self.data / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            OMP_NUM_THREADS="1",
            PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED="false",
            PESFLOW_TEST_DFT_LOG=str(self.dft_log),
        )
        if self.backend == "postgres":
            env["PESFLOW_DATABASE_URL"] = self.db_url
        if self.api_url and not own_prefect:
            env["PREFECT_API_URL"] = self.api_url
        env.update(extra)
        return env

    def start(
        self, *args: str, block: str | None = None, own_prefect: bool = False, **env: str
    ) -> Proc:
        """Start ``pesflow ARGS --quiet`` in its own process group (``block``: see
        :data:`LAUNCHER`; ``own_prefect``: with its own temporary Prefect server, in its process
        group, instead of the shared API)."""
        k = len(self.procs)
        name = f"{k}-{args[0]}"
        proc_env = self.env(own_prefect, **env)
        marker = self.tmp / f"{name}.blocked"
        if block:
            proc_env.update(PESFLOW_TEST_BLOCK=block, PESFLOW_TEST_BLOCKED=str(marker))
        out, err = self.tmp / f"{name}.out", self.tmp / f"{name}.err"
        popen = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *args, "--quiet"],
            cwd=ROOT,
            env=proc_env,
            stdout=out.open("wb"),
            stderr=err.open("wb"),
            start_new_session=True,
        )
        proc = Proc(popen, name, out, err, marker)
        self.procs.append(proc)
        return proc

    @property
    def store(self):
        """A store on the site's database (migrated on first use, before processes start)."""
        if self._store is None:
            from database import Store

            self._store = Store.from_url(self.db_url)
        return self._store

    def wait_for(
        self, proc: Proc, cond: Callable[[], bool], what: str, timeout: float = 240.0
    ) -> float:
        """Poll ``cond`` until true (failing if ``proc`` exits first); returns the seconds."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(Exception):  # the campaign may not be there yet
                if cond():
                    return time.monotonic() - t0
            if proc.popen.poll() is not None:
                pytest.fail(
                    f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n" + proc.output()
                )
            time.sleep(0.05)
        kill_group(proc.popen)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n" + proc.output())

    def finish(self, proc: Proc, timeout: float = 400.0) -> int:
        """Wait for ``proc`` to exit; returns its exit code."""
        try:
            return proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.popen)
            pytest.fail(f"{proc.name} did not finish in {timeout:.0f} s:\n" + proc.output())

    def close(self) -> None:
        """Kill every process group started here and check that none of their processes is
        left (zombies of killed children reparented elsewhere excepted)."""
        if self._store is not None:
            self._store.close()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=30)
        left: dict[str, list[int]] = {}
        deadline = time.monotonic() + 15
        for p in self.procs:
            while (members := group_members(p.pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if members or p.popen.poll() is None:
                left[p.name] = members or [p.pid]
        assert not left, f"processes left behind: {left}"


@contextlib.contextmanager
def database_url(backend: str, data: Path) -> Iterator[str]:
    """A fresh database: the SQLite file of ``data``, or a new PostgreSQL schema (dropped
    afterwards) of ``PESFLOW_TEST_POSTGRES_URL`` — which must be set: the PostgreSQL variant
    fails rather than skips without it."""
    data.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        from database import sqlite_url

        yield sqlite_url(data)
        return
    from database.testing import POSTGRES_ENV, require_test_database, temporary_postgres_schema

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.fail(f"{POSTGRES_ENV} is not set: the PostgreSQL variant cannot run")
    with temporary_postgres_schema(require_test_database(base)) as url:
        yield url


@pytest.fixture
def prefect_api_url(prefect_harness) -> str:
    """The session's Prefect API: the processes use it instead of starting their own
    temporary server each (8-13 s per process on 2 cores)."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()


# Each case is 15-70 s of real processes: the default suite runs them on PostgreSQL (the
# production backend, a real server); SQLite (the embedded default, which the in-process resume
# tests cover) repeats them behind the ``slow`` marker.
SITE_BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.slow),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=SITE_BACKENDS)
def site(request, tmp_path, prefect_api_url) -> Iterator[Site]:
    """A :class:`Site` on each backend; its processes are killed and checked gone afterwards."""
    data = tmp_path / "data"
    with database_url(request.param, data) as url:
        s = Site(tmp_path, request.param, url, data, tmp_path / "dft.log", prefect_api_url)
        try:
            yield s
        finally:
            s.close()


def done_labels(store, cid) -> dict[int, tuple]:
    """``{label id: (structure id, finished_at, energy)}`` of the done labels."""
    return {
        lb.id: (lb.structure_id, lb.finished_at, lb.energy)
        for lb in store.list_labels(cid, status="done", limit=None)
    }


def fingerprints(store, structure_ids) -> dict[int, str]:
    """The labeler's fingerprint of each structure (what the DFT-run log records)."""
    from dft_adapters.mock import structure_fingerprint

    ids = list(structure_ids)
    return {sid: structure_fingerprint(a) for sid, a in zip(ids, store.get_atoms(ids), strict=True)}


def assert_each_structure_computed_once(store, cid, log: Path) -> Counter:
    """Every label of the campaign is done after exactly one DFT run (instrumented count)."""
    runs = dft_runs(log)
    labels = store.list_labels(cid, limit=None)
    assert labels and all(lb.status == "done" for lb in labels)
    fps = fingerprints(store, [lb.structure_id for lb in labels])
    twice = {fp: n for fp, n in runs.items() if n > 1}
    assert not twice, f"DFT run more than once: {twice}"
    assert set(runs) == set(fps.values()), "a DFT run without a label, or a label without one"
    assert sum(runs.values()) == len(labels)
    assert all(lb.attempts == 1 for lb in labels), [lb.attempts for lb in labels]
    return runs


def host() -> str:
    return socket.gethostname()


# --------------------------------------------------------------------------- the test
WALKERS = [
    {"temperature": t, "steps": 100, "timestep": 2.0, "record_every": 10}
    for t in (300, 600, 900, 1200)
]


def test_kill_in_each_step_then_resume_to_convergence(site: Site):
    """4 walkers; kill -9 in bootstrap labelling, training, exploration and the labelling of
    iteration 1, each time resumed at once (the dead holder is noticed on this host, no wait
    for the lease to expire), then resumed to convergence."""
    cfg = write_config(
        site.tmp / "kill.yaml",
        name="killme",
        labeler={"name": "emt", "faults": {"fraction": 0.0, "delay": 0.2}},
        validation={"n_structures": 8},
        exploration={"walkers": WALKERS},
        trust={"lo": 0.15, "hi": 0.5},
        convergence={"accurate_ratio": 0.5, "patience": 1, "max_iterations": 4},
    )
    store = site.store  # migrates the database before any process starts

    def cid() -> int:
        return store.get_campaign("killme").id

    def counts() -> dict[str, int]:
        return store.count_labels(cid())

    def only_blocked_label_left(proc: Proc) -> bool:
        c = counts()
        return proc.marker.exists() and c["pending"] == 0 and c["running"] == 1

    def took_over(proc: Proc, dead: Proc) -> None:  # at once: the dead pid noticed on this host
        log = proc.log(site.data)
        assert f"pid {dead.pid} (pesflow " in log and "is gone; took over" in log, log

    def blocked_label(proc: Proc):
        (label_id,) = proc.blocked_at()
        lb = store.get_label(label_id)
        outcome = site.data / "labels" / str(label_id) / "round-0" / "outcome.json"
        assert lb.status == "running" and outcome.is_file(), (lb.status, outcome)
        return lb

    # 1. bootstrap labelling: the 10th result is computed but not stored; the others finish
    p = site.start("run", str(cfg), block="store_result:10:")
    site.wait_for(p, lambda: only_blocked_label_left(p), "bootstrap labelling")
    kill_group(p.popen)
    assert p.popen.returncode == -signal.SIGKILL
    kept = [blocked_label(p).id]
    assert not store.list_models(cid())
    rec = store.get_campaign("killme")
    assert rec.status == "running" and rec.lease.pid == p.pid  # the dead holder's lease
    before = done_labels(store, cid())
    assert len(before) >= 4

    # 2. training: the checkpoint is written, the model row not
    dead, p = p, site.start("resume", "killme", block="record_model:1:")
    site.wait_for(p, p.marker.exists, "training")
    kill_group(p.popen)
    took_over(p, dead)
    it0 = store.get_iteration(cid(), 0)
    assert not store.list_models(cid()) and "train" not in it0.completed_steps
    assert (site.data / "campaigns" / "killme" / "models" / "iter-000.pt").is_file()
    assert counts()["running"] == counts()["pending"] == 0
    after = done_labels(store, cid())
    assert all(after[i] == before[i] for i in before), "a done label was recomputed or lost"
    before = after

    # 3. exploration: 3 of 4 walkers recorded, the other stopped before it is recorded
    dead, p = p, site.start("resume", "killme", block="record_walker_run:2:")
    site.wait_for(
        p,
        lambda: p.marker.exists() and len(store.list_walker_runs(it0.id)) == 3,
        "exploration",
    )
    kill_group(p.popen)
    took_over(p, dead)
    it0 = store.get_iteration(cid(), 0)
    assert "explore" not in it0.completed_steps and "select" not in it0.completed_steps
    explored_before = {r.walker: r.id for r in store.list_walker_runs(it0.id)}
    assert 1 <= len(explored_before) <= 3
    assert len(store.list_models(cid())) == 1
    after = done_labels(store, cid())
    assert all(after[i] == before[i] for i in before)
    before = after

    # 4. labelling of iteration 1: selected, the 3rd of its results computed but not stored
    dead, p = p, site.start("resume", "killme", block="store_result:3:1")
    site.wait_for(p, lambda: only_blocked_label_left(p), "labelling of iteration 1")
    kill_group(p.popen)
    took_over(p, dead)
    it1 = store.get_iteration(cid(), 1)
    assert "select" in it1.completed_steps and "label" not in it1.completed_steps
    lb = blocked_label(p)
    assert lb.iteration_id == it1.id
    kept.append(lb.id)
    after = done_labels(store, cid())
    assert all(after[i] == before[i] for i in before)
    before = after

    # 5. resume to the end
    dead, p = p, site.start("resume", "killme")
    assert site.finish(p) == 0, p.output()
    took_over(p, dead)

    c = cid()
    rec = store.get_campaign(c)
    assert rec.status == "converged", rec.status_message
    assert rec.lease is None  # given back
    labels = store.list_labels(c, limit=None)
    sids = [lb.structure_id for lb in labels]
    selected = {x.structure_id for x in store.list_selections(c)}
    assert len(sids) == len(set(sids)) == len(selected)  # one label per selected structure
    assert set(sids) == selected
    after = done_labels(store, c)
    assert all(after[i] == before[i] for i in before)  # never recomputed, never lost
    by_id = {lb.id: lb for lb in labels}
    assert all(by_id[i].claims == 2 for i in kept)  # requeued and claimed again...
    assert_each_structure_computed_once(store, c, site.dft_log)  # ...without a second DFT run
    its = store.list_iterations(c)
    assert len(its) >= 2 and [i.status for i in its] == ["done"] * len(its)
    models = store.list_models(c)
    assert sorted(m.iteration_id for m in models) == sorted(i.id for i in its)
    for it in its:
        runs = store.list_walker_runs(it.id)
        assert sorted(r.walker for r in runs) == [0, 1, 2, 3] and it.n_explored > 0
    # walkers that had been recorded before the kill were not run again
    runs = {r.walker: r.id for r in store.list_walker_runs(its[0].id)}
    assert all(runs[w] == i for w, i in explored_before.items())
