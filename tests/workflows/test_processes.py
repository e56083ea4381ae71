"""One writer per campaign, with real processes, on SQLite and on PostgreSQL.

- Two ``pesflow resume`` of one campaign started at the same moment: one runs it to the end,
  the other is refused at once with one ``error:`` line naming the holder; the labeler runs
  each structure's DFT once, all in the process that holds the campaign.
- A holder killed with ``kill -9`` while labelling: once its lease expires the campaign reads
  ``interrupted`` in ``pesflow status``, naming the dead holder; ``pesflow resume`` completes
  it, without running again the DFT calculation that had finished before the kill.

DFT runs are counted by the instrumented labeler (:mod:`tests.workflows._counting`); processes
are started, killed and checked gone with the helpers of ``test_resume.py``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from typer.testing import CliRunner

from . import test_resume
from ._campaigns import write_config
from ._counting import dft_runs
from .test_resume import (
    Site,
    assert_each_structure_computed_once,
    group_members,
    host,
    kill_group,
)

site = test_resume.site  # fixtures
prefect_api_url = test_resume.prefect_api_url

SMALL = {
    "labeler": {"name": "emt", "faults": {"fraction": 0.0, "delay": 0.3}},
    "bootstrap": {"n_structures": 4},
    "validation": {"n_structures": 4},
    "training": {"max_epochs": 6, "max_time_s": 600, "warm_start_epochs": 3},
    "exploration": {
        "walkers": [{"temperature": t, "steps": 30, "record_every": 5} for t in (600, 900, 1200)]
    },
    "selection": {"max_per_iteration": 4, "strategy": "max-first"},
    "convergence": {"accurate_ratio": 0.999, "patience": 1, "max_iterations": 1},
}


def _config(s: Site, name: str) -> Path:
    return write_config(s.tmp / f"{name}.yaml", name=name, **SMALL)


def _ended_as_configured(s: Site, name: str) -> None:
    rec = s.store.get_campaign(name)
    assert rec.status == "paused" and "max_iterations=1" in rec.status_message, rec
    assert rec.lease is None  # given back
    its = s.store.list_iterations(rec.id)
    assert [i.status for i in its] == ["done"]
    assert len(s.store.list_models(rec.id)) == 1


def test_two_concurrent_resumes_one_runs_the_other_is_refused(site: Site):
    """The campaign is left as by a killed ``pesflow run`` (``running``, the unexpired lease of
    a dead pid of this host). Both processes import, then start on one go file: both see the
    dead holder, the one that takes the lease runs the campaign to its end; the other exits 1
    at once, its one stderr line naming the holder (host, pid, purpose, since) and its log
    file; every DFT run is the holder's, once each."""
    from workflows.config import load_config
    from workflows.steps import setup_campaign

    # as left by a `pesflow run` killed early: set up, `running`, the lease of a dead process
    setup_campaign(site.store, load_config(_config(site, "twice")), site.data)
    gone = subprocess.Popen(["true"])
    gone.wait()
    from workflows.lease import process_identity

    boot, ns, _ = process_identity().split("/", 2)
    site.store.acquire_lease(
        "twice",
        token="dead",
        host=host(),
        pid=gone.pid,
        process=f"{boot}/{ns}/1",  # a process of this machine and pid namespace, now gone
        purpose="pesflow run",
        ttl_s=600,
    )
    assert site.store.get_campaign("twice").status == "running"
    go = site.tmp / "go"
    procs = [
        site.start(
            "resume",
            "twice",
            PESFLOW_TEST_READY=str(site.tmp / f"{k}.ready"),
            PESFLOW_TEST_GO=str(go),
        )
        for k in range(2)
    ]
    # both imported and waiting: go
    deadline = time.monotonic() + 120
    while not all((site.tmp / f"{k}.ready").exists() for k in range(2)):
        assert all(p.popen.poll() is None for p in procs), [p.output() for p in procs]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.02)
    go.touch()
    t0 = time.monotonic()
    while all(p.popen.poll() is None for p in procs):
        assert time.monotonic() - t0 < 120, [p.output() for p in procs]
        time.sleep(0.02)
    refused_after = time.monotonic() - t0
    loser = next(p for p in procs if p.popen.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    assert winner.popen.poll() is None, "the refused process outlived the holder"
    assert loser.popen.returncode == 1, loser.output()
    assert refused_after < 20, f"refused only after {refused_after:.1f} s"

    # one line on stderr naming the holder: host, pid, purpose, since; and the log file
    lines = loser.stderr.read_text().splitlines()
    assert len(lines) == 1, loser.output()
    m = re.fullmatch(
        r"error: campaign 'twice' is held by (\S+) pid (\d+) \(pesflow resume\) since "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; .* \(details: (\S+)\)",
        lines[0],
    )
    assert m, lines[0]
    assert m[1] == host() and int(m[2]) == winner.pid
    assert Path(m[3]).is_file()

    assert site.finish(winner) == 0, winner.output()
    assert f"pid {gone.pid} (pesflow run)" in winner.log(site.data)  # the dead holder's lease
    _ended_as_configured(site, "twice")
    # every DFT run was the holder's, each structure computed once
    cid = site.store.get_campaign("twice").id
    runs = assert_each_structure_computed_once(site.store, cid, site.dft_log)
    pids = {line.split()[0] for line in site.dft_log.read_text().splitlines()}
    assert pids == {str(winner.pid)}
    assert sum(runs.values()) == len(site.store.list_labels(cid, status="done", limit=None))


def test_killed_holder_reads_interrupted_and_resumes(site: Site, monkeypatch):
    """``pesflow run`` (lease ttl 3 s, its own Prefect server) stops at the 3rd stored label,
    with its DFT run finished and ``outcome.json`` written; the other labels finish; then
    ``kill -9`` of its process group. Once the lease expires, ``pesflow status`` (list and
    campaign) shows ``interrupted`` naming the dead holder; ``pesflow resume`` completes the
    campaign (exit 0) and reads the finished outcome back: no DFT run twice."""
    from pesflow.cli import app

    ttl = 3.0
    name = "victim"
    store = site.store
    # the holder with its own temporary Prefect server (in its process group: killed with it)
    holder = site.start(
        "run",
        str(_config(site, name)),
        block="store_result:3:",
        own_prefect=True,
        PESFLOW_LEASE_TTL_S=str(ttl),
    )

    def only_blocked_label_left() -> bool:
        c = store.count_labels(name)
        return holder.marker.exists() and c["pending"] == 0 and c["running"] == 1

    site.wait_for(holder, only_blocked_label_left, "labelling")
    assert len(group_members(holder.pid)) >= 2  # the CLI and its Prefect server
    kill_group(holder.popen)
    killed_at = time.monotonic()
    assert holder.popen.returncode == -signal.SIGKILL
    while group_members(holder.pid):  # the server goes with it
        assert time.monotonic() - killed_at < 10, group_members(holder.pid)
        time.sleep(0.05)
    # the blocked label's DFT run had finished: its outcome is on disk, not in the database
    (label_id,) = holder.blocked_at()
    assert store.get_label(label_id).status == "running"
    assert (site.data / "labels" / str(label_id) / "round-0" / "outcome.json").is_file()
    runs_before = sum(dft_runs(site.dft_log).values())
    assert runs_before == len(store.list_labels(name, limit=None))  # nothing in flight

    # the lease expires ttl after the last heartbeat: then `interrupted`, naming the holder
    while (rec := store.get_campaign(name)).status != "interrupted":
        assert time.monotonic() - killed_at < ttl + 10, rec
        time.sleep(0.1)
    assert rec.lease is not None and not rec.lease.alive and rec.lease.pid == holder.pid
    dead = f"{host()} pid {holder.pid} (pesflow run) since"
    assert rec.status_message.startswith(f"interrupted: {dead}"), rec.status_message
    assert "stopped renewing its lease" in rec.status_message

    monkeypatch.setenv("PESFLOW_DATA_DIR", str(site.data))
    if site.backend == "postgres":
        monkeypatch.setenv("PESFLOW_DATABASE_URL", site.db_url)
    runner = CliRunner()
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if name in line)
    cells = [c.strip() for c in re.split(r"[│┃|]", row) if c.strip()]
    assert cells[:3] == [name, "interrupted", "-"], row  # status; held by nobody
    table = " ".join(
        c.strip() for line in res.output.splitlines() for c in re.split(r"[│┃|]", line)[-2:-1]
    )
    assert f"interrupted: {dead}" in " ".join(table.split()), res.output
    res = runner.invoke(app, ["status", name])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"campaign {name}: interrupted" in text and f"interrupted: {dead}" in text, res.output
    assert "held by" not in text

    # resume (no force) completes it; the finished DFT run is read back, not repeated
    resumed = site.start("resume", name)
    assert site.finish(resumed) == 0, resumed.output()
    _ended_as_configured(site, name)
    runs = assert_each_structure_computed_once(
        site.store, store.get_campaign(name).id, site.dft_log
    )
    assert max(runs.values()) == 1
    lb = store.get_label(label_id)
    assert lb.status == "done" and lb.claims == 2 and lb.attempts == 1
