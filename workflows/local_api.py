"""The temporary local Prefect API of the embedded default, started without blocking.

With no ``PREFECT_API_URL``, Prefect starts a temporary API server inside the first flow call
and waits for it. That wait is pure orchestration time. The server process starts in 4–5 s
with an existing Prefect database, and in 11–13 s when the database must first be created and
migrated (2-core machine, Prefect 3.8.8). The main process also imports Prefect's server module
for this, another 2–3 s.

:func:`start_local_api` launches the very same server process (the command and environment
of ``prefect.server.api.server.SubprocessASGIServer``) and returns at once. The caller then
does its own start-up work while the server comes up: importing Prefect, torch and the
science packages, and opening the campaign. Then :meth:`LocalAPI.wait` waits for the
server's health check and :meth:`LocalAPI.settings` gives the settings under which the flow
uses it. Two changes from Prefect's own temporary server:
- the process stays in the caller's process group (a ``kill -9`` of the group ends it too),
  and on Linux it also gets SIGTERM when its parent dies (``PR_SET_PDEATHSIG``). It is
  stopped explicitly, or at exit;
- block types are not registered on start (``PREFECT_API_BLOCKS_REGISTER_ON_START=false``),
  since pesflow stores no blocks. This saves 1.5–2.5 s of a new database's first start.

A long-lived process that runs flows in worker threads (the API server) uses
:data:`shared_api` instead (:class:`SharedLocalAPI`): one server for all its flow runs, started
on the first run from a thread that lives as long as the process (``PR_SET_PDEATHSIG`` fires
when the *thread* that started the child ends, not only the process), used by each run through
``temporary_settings`` (so nothing else in the process, e.g. the dashboard's flow-run view or
the schedules, mistakes it for a configured server), and stopped by :meth:`SharedLocalAPI.close`
(the API's shutdown) or with the process.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "PRELOAD",
    "LocalAPI",
    "LocalAPIError",
    "SharedLocalAPI",
    "prefect_api",
    "preload",
    "shared_api",
    "start_local_api",
]

# What the flows and steps import on first use; imported while the server starts.
PRELOAD = (
    "workflows.flows",
    "mlip_core.training",
    "mlip_core.checkpoint",
    "mlip_core.calculator",
    "mlip_core.md",
    "mlip_core.selection",
    "dft_adapters",
)

# As prefect.server.api.server.SubprocessASGIServer._run_uvicorn_command sets them.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    # its own log file keeps the server's warnings (the CLI's console level is CRITICAL)
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
}


class LocalAPIError(RuntimeError):
    """The temporary Prefect API did not come up (the message says why, in one line)."""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux ``prctl``)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect_dir() -> Path:
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise LocalAPIError("prefect is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class LocalAPI:
    """A temporary Prefect API server process on ``127.0.0.1`` (see the module docstring)."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after_s: float | None = None

    def start(self) -> LocalAPI:
        """Launch the server process (returns at once)."""
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(_prefect_dir().parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={**os.environ, **_SERVER_ENV},
            stdout=out,
            stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        if self.log:
            out.close()  # type: ignore[union-attr]
        atexit.register(self.stop)
        return self

    def wait(self, timeout: float = 90.0) -> str:
        """Block until the server answers its health check; returns the API URL."""
        if self.ready_after_s is not None:
            return self.url
        if self.process is None:
            raise LocalAPIError("the temporary Prefect API was never started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise LocalAPIError(
                    f"the temporary Prefect API exited with code {code} before it was ready"
                    + (f" (log: {self.log})" if self.log else "")
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        self.ready_after_s = time.perf_counter() - self.started_at
                        return self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalAPIError(f"the temporary Prefect API did not answer within {timeout:g} s")

    def settings(self) -> Any:
        """``prefect.settings.temporary_settings`` pointing this process's Prefect client at
        the server (call after :meth:`wait`)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.url})

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _server_configured() -> bool:
    """Whether a Prefect server is configured: ``PREFECT_API_URL`` in the environment or in
    Prefect's current settings (e.g. a test harness set it)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value())
    return False


def _default_log() -> Path | None:
    home = os.environ.get("PREFECT_HOME")
    return Path(home) / "temporary-server.log" if home else None


def start_local_api(log: Path | None = None) -> LocalAPI | None:
    """Start the temporary API when no server is configured (``PREFECT_API_URL`` unset);
    ``None`` when one is. Server errors go to ``log`` (default:
    ``$PREFECT_HOME/temporary-server.log``). Call after :func:`workflows.settings.configure_prefect_env`
    so that the server gets the same Prefect home and settings."""
    if _server_configured():
        return None
    return LocalAPI(log=log or _default_log()).start()


class SharedLocalAPI:
    """One temporary Prefect API shared by the flow runs of a long-lived process (see the
    module docstring); thread-safe. A flow run wraps itself in :meth:`use`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._api: LocalAPI | None = None
        self._users = 0
        self._closing = False
        self._starts: queue.Queue[tuple[Path | None, queue.Queue[Any]]] = queue.Queue()
        self._owner: threading.Thread | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server process while one runs (tests, diagnostics)."""
        api = self._api
        return api.process if api is not None else None

    def _launch(self, log: Path | None) -> LocalAPI:
        """Start a server from the owner thread (started once, lives as long as the process)."""
        if self._owner is None or not self._owner.is_alive():
            self._owner = threading.Thread(
                target=self._serve, name="pesflow-prefect-api", daemon=True
            )
            self._owner.start()
        reply: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._starts.put((log, reply))
        out = reply.get()
        if isinstance(out, BaseException):
            raise out
        return out

    def _serve(self) -> None:
        while True:
            log, reply = self._starts.get()
            try:
                reply.put(LocalAPI(log=log).start())
            except BaseException as exc:  # handed to the caller
                reply.put(exc)

    @contextmanager
    def use(self, timeout: float = 90.0, log: Path | None = None) -> Iterator[LocalAPI | None]:
        """For one flow run in the calling thread: with no Prefect server configured, start
        the shared server (first use) or reuse it, wait until it answers, and point this
        thread's Prefect settings at it; ``None`` (and nothing changed) when a server is
        configured. Call after :func:`workflows.settings.configure_prefect_env`."""
        if _server_configured():
            yield None
            return
        with self._lock:
            api = self._api
            if api is None or api.process is None or api.process.poll() is not None:
                api = self._api = self._launch(log or _default_log())
            self._users += 1
        try:
            api.wait(timeout)
            with api.settings():
                yield api
        finally:
            with self._lock:
                self._users -= 1
                last = self._closing and self._users == 0
            if last:
                self._stop()

    def close(self) -> bool:
        """Stop the server now when no flow run uses it (``True``), else as soon as the last
        one ends (``False``). A later :meth:`use` starts a new one."""
        with self._lock:
            if self._users:
                self._closing = True
                return False
        self._stop()
        return True

    def _stop(self) -> None:
        with self._lock:
            api, self._api, self._closing = self._api, None, False
        if api is not None and api.process is not None:
            _drain_prefect_clients()
            api.stop()


shared_api = SharedLocalAPI()
"""The process's shared temporary Prefect API (nothing starts until its first :meth:`use`)."""


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """Import ``modules`` now (Prefect, the flows, torch and the science packages)."""
    for name in modules:
        importlib.import_module(name)


@contextmanager
def prefect_api(timeout: float = 90.0, log: Path | None = None) -> Iterator[LocalAPI | None]:
    """For a flow run in this process: with no Prefect server configured, start the temporary
    API, :func:`preload` while it comes up, wait for it, and point Prefect (and child
    processes, e.g. a local Dask cluster) at it until exit; then stop it. With a server
    configured, only preload. Call after :func:`workflows.settings.configure_prefect_env`."""
    api = start_local_api(log=log)
    try:
        preload()
        if api is None:
            yield None
            return
        url = api.wait(timeout)
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            with api.settings():
                yield api
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
    finally:
        if api is not None:
            _drain_prefect_clients()
            api.stop()


def _drain_prefect_clients() -> None:
    """Send Prefect's queued logs and events now, while the server still listens."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    if "prefect.events.worker" in sys.modules:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)
