"""The temporary local Prefect API of the embedded default: started without blocking, used by
the flow, stopped with its owner, and a start-up failure named in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from workflows.local_api import LocalAPI, LocalAPIError, prefect_api


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@flow(name="local-api-probe")
def _probe() -> str:
    return "ran"


def test_flow_runs_on_the_temporary_api_which_stops_afterwards(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))  # the server's own, new database
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with prefect_api(timeout=90, log=tmp_path / "server.log") as api:
            assert api is not None and api.ready_after_s is not None
            assert os.environ["PREFECT_API_URL"] == api.url == PREFECT_API_URL.value()
            assert _probe() == "ran"
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                flows = {f.id: f.name for f in client.read_flows()}
                runs = client.read_flow_runs()
            # the run is recorded, completed, on this (new, otherwise empty) server
            assert [flows[r.flow_id] for r in runs] == ["local-api-probe"]
            assert runs[0].state is not None and runs[0].state.is_completed()
            pid, url = api.process.pid, api.url
        assert "PREFECT_API_URL" not in os.environ
    assert not _alive(pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


@pytest.mark.slow  # 16 s of a second temporary server
def test_server_dies_with_a_killed_parent(tmp_path: Path):
    script = (
        "import sys, time\n"
        "from workflows.local_api import LocalAPI\n"
        "api = LocalAPI().start(); api.wait(90)\n"
        "print(api.process.pid, flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        server_pid = int(parent.stdout.readline())
        assert _alive(server_pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only PR_SET_PDEATHSIG
        parent.wait()
        deadline = time.monotonic() + 15
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server_pid)
    finally:
        parent.kill()


def test_a_server_that_cannot_start_is_one_line(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        api = LocalAPI(port=busy.getsockname()[1], log=tmp_path / "server.log").start()
        with pytest.raises(LocalAPIError, match="exited with code") as err:
            api.wait(timeout=60)
    assert "\n" not in str(err.value) and "server.log" in str(err.value)


class _Sleeper:
    """Stands in for :class:`LocalAPI` in the shared-server tests: a ``sleep`` child started
    like the server (``PR_SET_PDEATHSIG``), ready at once."""

    def __init__(self, log: Path | None = None) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.url = "http://127.0.0.1:9/api"

    def start(self) -> _Sleeper:
        from workflows import local_api

        self.process = subprocess.Popen(["sleep", "300"], preexec_fn=local_api._die_with_parent)
        return self

    def wait(self, timeout: float = 90.0) -> str:
        return self.url

    def settings(self):
        import contextlib

        return contextlib.nullcontext()

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            proc.terminate()
            proc.wait(5)


def _in_thread(fn) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join(30)


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_the_shared_server_outlives_the_worker_thread_that_needed_it(monkeypatch):
    """PR_SET_PDEATHSIG fires when the *thread* that started the child ends: a server started
    from a worker thread that ends would die under the next flow run. The shared server is
    started from its own long-lived thread; it stops on close(), or after the last run."""
    from workflows import local_api

    monkeypatch.setattr(local_api, "LocalAPI", _Sleeper)
    monkeypatch.setattr(local_api, "_server_configured", lambda: False)
    direct: list[_Sleeper] = []
    _in_thread(lambda: direct.append(_Sleeper().start()))  # the problem, shown
    assert _gone_within(direct[0].process.pid, 5), "PR_SET_PDEATHSIG did not fire"
    direct[0].process.wait()

    shared = local_api.SharedLocalAPI()
    pids: list[int] = []

    def run() -> None:
        with shared.use() as api:
            pids.append(api.process.pid)

    _in_thread(run)
    _in_thread(run)
    assert pids[0] == pids[1]  # one server for both runs
    assert not _gone_within(pids[0], 1.0)  # alive after both worker threads ended
    # close() while a run uses it: stopped when that run ends
    entered, release = threading.Event(), threading.Event()

    def long_run() -> None:
        with shared.use():
            entered.set()
            release.wait(30)

    t = threading.Thread(target=long_run)
    t.start()
    assert entered.wait(30)
    assert shared.close() is False and _alive(pids[0])
    release.set()
    t.join(30)
    assert _gone_within(pids[0], 5) and shared.process is None
    _in_thread(run)  # a later run starts a new one; close() with no run stops it at once
    assert pids[2] != pids[0] and shared.close() is True and _gone_within(pids[2], 5)


def test_the_shared_server_is_not_started_when_a_server_is_configured(monkeypatch):
    from workflows import local_api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    shared = local_api.SharedLocalAPI()
    with shared.use() as api:
        assert api is None and shared.process is None
