"""``pesflow serve`` as a real process (issue 13, items 4 and 6): request limits cost the server
no memory, and SIGTERM after a flow run leaves no process behind.

One server for the module (its start-up and the temporary Prefect API's are paid once), in its
own process group, on SQLite in a temporary data directory:

* a 10 MB anonymous body is answered 413 without the server's memory growing by more than a
  few MB, with ``Content-Length`` (answered from the header) and chunked (counted while it
  streams);
* a campaign created through the API runs one iteration as a Prefect flow run of the server
  process, after the dashboard's flow-run view imported Prefect first (that order used to
  leave Prefect with its own start-up timeout); SIGTERM then ends the server, the temporary
  Prefect API it started and every other process of its group within 15 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from .._procs import stop_group, wait_group_gone
from ._data import tiny_config

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


@dataclass
class Server:
    """The running server: base URL, process, data directory, admin token."""

    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    token: str
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pesflow", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """``python -m pesflow serve`` in its own session (group id = its pid), with an admin
    token; at the end the whole group is stopped (SIGTERM, then SIGKILL) and checked gone."""
    tmp = tmp_path_factory.mktemp("serve")
    data_dir = tmp / "data"
    # no Prefect or pesflow settings from the test session: serve applies pesflow's own
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PESFLOW_", "PREFECT_"))}
    env |= {"PESFLOW_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    scope = ["--scope", "admin"] if "--scope" in _cli(env, "token", "create", "--help") else []
    token = _cli(env, "token", "create", "tester", *scope).strip().splitlines()[-1]
    port = _free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pesflow",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, id = its pid
        )
    srv = Server(f"http://127.0.0.1:{port}", proc, data_dir, token, log)
    try:
        t_end = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"serve exited: {log.read_text()[-3000:]}"
            try:
                if httpx.get(srv.url + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < t_end, "serve did not answer within 90 s"
            time.sleep(0.1)
        yield srv
    finally:
        assert stop_group(proc), "a process of the server's group is still running"


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    block = b"x" * size
    for _ in range(total // size):
        yield block


def test_a_10_mb_anonymous_body_is_413_without_memory_growth(server: Server) -> None:
    url = server.url + "/api/v1/campaigns"
    body = b"x" * (10 * MB)
    with httpx.Client(timeout=60) as c:
        for _ in range(3):  # warm-up: the allocator and the code paths of a 413
            c.post(url, content=b"x" * (9 * MB), headers={"Content-Type": "application/json"})
            c.post(server.url + "/api/v1/campaigns/1/pause", content=_chunks(MB))
        before = server.rss()
        t0 = time.perf_counter()
        r = c.post(url, content=body, headers={"Content-Type": "application/json"})
        wall = time.perf_counter() - t0
        assert r.status_code == 413, r.text
        assert r.json() == {"detail": f"request body larger than {8 * MB} bytes"}
        assert r.headers["x-content-type-options"] == "nosniff"
        grown = server.rss() - before
        assert grown < 5 * MB, f"RSS grew by {grown / MB:.1f} MB"
        # chunked (no Content-Length): counted while it streams, 413 once over 64 KiB
        before = server.rss()
        r = c.post(server.url + "/api/v1/campaigns/1/pause", content=_chunks(10 * MB))
        assert r.status_code == 413, r.text
        assert "65536 bytes" in r.json()["detail"]
        grown = server.rss() - before
        assert grown < 5 * MB, f"RSS grew by {grown / MB:.1f} MB"
        # the upload route reads ahead only 64 KiB before authentication: anonymous is 401
        r = c.post(url, content=_chunks(10 * MB))
        assert r.status_code == 401, r.text
        assert server.rss() - before < 5 * MB
        assert c.get(server.url + "/api/v1/health").status_code == 200  # still serving
    print(f"\n10 MB anonymous body: 413 in {wall * 1000:.0f} ms")


def _wait_run(c: httpx.Client, run_id: str, timeout: float) -> dict:
    t_end = time.monotonic() + timeout
    while True:
        run = c.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] not in ("queued", "running", "submitted"):
            return run
        assert time.monotonic() < t_end, f"run still {run['status']} after {timeout} s"
        time.sleep(0.5)


def test_sigterm_after_a_flow_run_leaves_no_process(server: Server) -> None:
    config = tiny_config(
        "serve-hygiene",
        bootstrap={"n_structures": 4},
        validation={"n_structures": 2},
        training={"max_epochs": 5, "max_time_s": 3, "warm_start_epochs": 3},
        exploration={"walkers": [{"temperature": 300, "steps": 20, "record_every": 5}]},
        convergence={"max_iterations": 1},
    )
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as c:
        r = c.post("/api/v1/campaigns", json={"config": config})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        # the dashboard's flow-run view imports Prefect in the server before any flow runs
        assert c.get(f"/api/v1/campaigns/{cid}/flow-runs").status_code == 200
        r = c.post(f"/api/v1/campaigns/{cid}/resume")
        assert r.status_code == 202, r.text
        run = _wait_run(c, r.json()["id"], timeout=300)
        assert run["status"] == "completed", (run, server.log.read_text()[-3000:])
        assert run["prefect_flow_run_id"]
        shown = c.get(f"/api/v1/campaigns/{cid}").json()
        assert shown["n_iterations"] == 1 and "by tester" not in (shown["status_message"] or "")
    parent = psutil.Process(server.proc.pid)
    children = parent.children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in children]
    [prefect] = [
        p for p in children if "prefect.server.api.server:create_app" in " ".join(p.cmdline())
    ]
    # started under pesflow's Prefect settings (configure_prefect_env in create_app)
    penv = prefect.environ()
    assert penv["PREFECT_HOME"] == str(server.data_dir / "prefect")
    assert penv["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] == "false"
    assert penv["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "90"
    assert all(os.getpgid(p.pid) == server.proc.pid for p in children), commands

    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(15)
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    assert wait_group_gone(server.proc.pid, 5), "a process of the server's group survived"
