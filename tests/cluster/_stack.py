"""Start/stop ``scripts/stack`` for tests: dedicated PostgreSQL databases (created by the
script, dropped here), free ports, a temporary run directory; every process group the stack
started is verified gone at the end."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._procs import group_alive

__all__ = ["group_alive", "postgres_up", "running_stack"]

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def postgres_up() -> bool:
    """Whether the local PostgreSQL server answers (the stack tests need it)."""
    return (
        subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False
        ).returncode
        == 0
    )


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_database(name: str) -> None:
    """DROP DATABASE ... WITH (FORCE) (connections of killed processes do not block it)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()

    return True


@dataclass
class Stack:
    """A running stack: its environment, ports and run directory."""

    dir: Path
    env: dict[str, str]
    api_port: int
    prefect_port: int
    db: str
    prefect_db: str
    pgids: dict[str, int] = field(default_factory=dict)

    @property
    def api(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    @property
    def prefect_api(self) -> str:
        """PREFECT_API_URL of the stack."""
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def db_url(self) -> str:
        """The pesflow database."""
        return f"{PG}/{self.db}"

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """``scripts/stack ARGS`` in its own process group (killed on timeout)."""
        proc = subprocess.Popen(
            [str(STACK), *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            raise AssertionError(f"scripts/stack {' '.join(args)} timed out:\n{out}") from None
        finally:
            self.read_pgids()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def read_pgids(self) -> dict[str, int]:
        """Remember every process group the stack has started (pid files)."""
        for pid_file in (self.dir / "pids").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                self.pgids.setdefault(
                    pid_file.stem + f"@{pid_file.read_text().strip()}", int(pid_file.read_text())
                )
        return self.pgids

    def log(self, service: str, tail: int = 4000) -> str:
        """The end of a service's log."""
        path = self.dir / "logs" / f"{service}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


@contextlib.contextmanager
def running_stack(tmp: Path, **extra_env: str) -> Iterator[Stack]:
    """``scripts/stack start`` ... ``stop``; asserts every started process group is gone and
    drops the two databases."""
    tag = secrets.token_hex(4)
    st = Stack(
        dir=tmp / "stack",
        env={},
        api_port=free_port(),
        prefect_port=free_port(),
        db=f"test_stack_{tag}",
        prefect_db=f"test_prefect_{tag}",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PESFLOW_"))}
    env.update(
        PESFLOW_STACK_DIR=str(st.dir),
        PESFLOW_STACK_DB=st.db,
        PESFLOW_STACK_PREFECT_DB=st.prefect_db,
        PESFLOW_STACK_API_PORT=str(st.api_port),
        PESFLOW_STACK_PREFECT_PORT=str(st.prefect_port),
        OMP_NUM_THREADS="1",
        PESFLOW_STACK_PYTHON=sys.executable,
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        **extra_env,
    )
    st.env = env
    try:
        res = st.run("start")
        assert res.returncode == 0, res.stdout
        yield st
    finally:
        st.read_pgids()
        stop = st.run("stop", timeout=90)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(group_alive, st.pgids.values())):
            time.sleep(0.2)
        alive = {k: g for k, g in st.pgids.items() if group_alive(g)}
        for g in alive.values():  # never leave anything behind, even when the check fails
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGKILL)
        for name in (st.db, st.prefect_db):
            with contextlib.suppress(Exception):
                drop_database(name)
        assert not alive, f"process groups still alive after stop: {alive}\n{stop.stdout}"
        assert stop.returncode == 0, stop.stdout
