"""A single-node SLURM cluster on this machine, for the cluster tests and ``benchmarks.cluster``.

:func:`single_node_slurm` writes a ``slurm.conf`` into a directory of its own (node = this
machine's hostname, ``CPUs=2``), makes sure MUNGE answers (the system key is reused; a missing
key is created; ``munged`` is started only when none answers, and then stopped again), starts
``slurmctld`` and ``slurmd`` in the foreground as child processes (each in a session of its
own), waits until ``sinfo`` shows the node idle and exports ``SLURM_CONF``. On exit it cancels
every job, stops each daemon it started by its process group (TERM, then KILL) and checks that
nothing of the cluster is left: no job in ``squeue`` and no process carrying the cluster's
name (:attr:`SlurmCluster.leftovers`); otherwise it raises :class:`SlurmLeftoverError`.

The recipe is the one of ``shared/notes/field_tools.md`` (Debian ``slurm-wlm`` 22.05 and
``munge``, as root, no systemd). Tests import it from here (tests may import benchmarks; the
benchmarks never import tests), so the benchmark and the tests share one cluster recipe.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "COMMANDS",
    "Job",
    "QueueWatch",
    "SlurmCluster",
    "SlurmLeftoverError",
    "missing",
    "single_node_slurm",
]

COMMANDS = ("slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun", "scancel", "munged")
"""What the cluster needs on ``PATH`` (Debian: ``slurm-wlm`` and ``munge``)."""

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")


class SlurmLeftoverError(AssertionError):
    """Something of the cluster outlived its stop (a daemon, a job, a job's process)."""


@dataclass(frozen=True)
class Job:
    """One line of ``squeue``."""

    id: str
    name: str
    state: str


@dataclass
class QueueWatch:
    """What a :meth:`SlurmCluster.watch` saw: every job (by id, last state seen), the most
    jobs listed at once and the most running at once."""

    jobs: dict[str, Job] = field(default_factory=dict)
    peak: int = 0
    peak_running: int = 0
    polls: int = 0

    def add(self, listed: list[Job]) -> None:
        """Record one ``squeue`` listing."""
        self.polls += 1
        for job in listed:
            self.jobs[job.id] = job
        self.peak = max(self.peak, len(listed))
        running = sum(job.state == "RUNNING" for job in listed)
        self.peak_running = max(self.peak_running, running)


def _which(command: str) -> str | None:
    """``command`` on ``PATH`` or in ``/usr/sbin``, ``/sbin`` (daemons; not on every PATH)."""
    return shutil.which(command, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")


def missing() -> str | None:
    """Why a SLURM cluster cannot be started here (``None`` when it can)."""
    absent = [c for c in COMMANDS if _which(c) is None]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "a private SLURM cluster is started as root here (SlurmUser=root)"
    return None


def _alive(pid: int) -> bool:
    """Any process left in process group ``pid`` (a zombie counts as gone)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> bool:
    """TERM the process group of ``proc``, KILL it after ``grace`` s; True when it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
        deadline = time.monotonic() + wait
        while _alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(proc.pid):
            return True
    return False


def _munge_answers() -> bool:
    """Whether a credential encoded by ``munge`` decodes (a ``munged`` is serving)."""
    if shutil.which("munge") is None or shutil.which("unmunge") is None:
        return False
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=False)
        if cred.returncode != 0:
            return False
        back = subprocess.run(
            ["unmunge"], input=cred.stdout, capture_output=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return back.returncode == 0


def _start_munged(log: Path) -> subprocess.Popen | None:
    """Start ``munged`` (as user ``munge``, in the foreground) unless one answers already;
    creates the key (1024 random bytes, mode 0400) and ``/run/munge`` when missing."""
    if _munge_answers():
        return None
    user = pwd.getpwnam("munge")
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(MUNGE_KEY.parent, user.pw_uid, user.pw_gid)
        MUNGE_KEY.write_bytes(secrets.token_bytes(1024))
        os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
        MUNGE_KEY.chmod(0o400)
    MUNGE_RUN.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(MUNGE_RUN, user.pw_uid, user.pw_gid)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [_which("munged") or "munged", "--foreground", "--force"],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while not _munge_answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"munged did not come up: {log.read_text(errors='replace')[-800:]}")
        time.sleep(0.1)
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _conf(root: Path, name: str, node: str, cpus: int, memory_mb: int) -> str:
    return f"""\
# A single-node SLURM for pesflow's tests and benchmarks (benchmarks/_slurm.py).
ClusterName={name}
SlurmctldHost={node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait=5
MinJobAge=30
# CPUs and RealMemory as configured, whatever this machine has
SlurmdParameters=config_overrides
NodeName={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _proc_environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


@dataclass
class SlurmCluster:
    """A running single-node cluster (see the module docstring)."""

    dir: Path
    name: str
    node: str
    cpus: int
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        """Its ``slurm.conf``."""
        return self.dir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs besides ``PATH``: ``SLURM_CONF``."""
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster (output captured)."""
        return subprocess.run(
            list(argv),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def jobs(self) -> list[Job]:
        """The jobs ``squeue`` lists (pending, running, completing)."""
        res = self.command("squeue", "-h", "-o", "%i|%j|%T")
        if res.returncode != 0:
            raise RuntimeError(f"squeue failed: {res.stderr.strip()}")
        rows = [line.split("|", 2) for line in res.stdout.splitlines() if line.strip()]
        return [Job(*row) for row in rows]

    def node_state(self) -> str:
        """The node's state as ``sinfo`` shows it (``idle``, ``mixed``, ``allocated`` ...)."""
        res = self.command("sinfo", "-h", "-N", "-o", "%T")
        return res.stdout.strip() if res.returncode == 0 else f"sinfo failed: {res.stderr}"

    def log(self, daemon: str = "slurmctld") -> str:
        """The daemon's log file."""
        path = self.dir / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_idle(self, timeout: float = 60.0) -> float:
        """Wait until the node is ``idle``; returns the seconds waited."""
        t0 = time.monotonic()
        while (state := self.node_state()) != "idle":
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(
                    f"node {self.node} not idle after {timeout:g} s ({state}):\n"
                    + self.log("slurmd")[-1500:]
                )
            time.sleep(0.2)
        return time.monotonic() - t0

    def cancel_all(self, timeout: float = 60.0) -> None:
        """``scancel`` every job and wait until ``squeue`` lists none."""
        deadline = time.monotonic() + timeout
        while jobs := self.jobs():
            self.command("scancel", *{j.id for j in jobs})
            if time.monotonic() > deadline:
                raise SlurmLeftoverError(f"jobs still queued {timeout:g} s after scancel: {jobs}")
            time.sleep(0.3)

    def job_processes(self) -> list[int]:
        """Processes that run in one of this cluster's jobs (their environment names the
        cluster: ``SLURM_CLUSTER_NAME``)."""
        marker = f"SLURM_CLUSTER_NAME={self.name}".encode()
        me = os.getpid()
        pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
        return [p for p in pids if p != me and marker in _proc_environ(p).split(b"\0")]

    def leftovers(self) -> dict[str, object]:
        """What is left of the cluster: live daemon process groups and job processes."""
        left: dict[str, object] = {
            name: proc.pid for name, proc in self.daemons.items() if _alive(proc.pid)
        }
        procs = self.job_processes()
        if procs:
            left["job processes"] = procs
        return left

    @contextlib.contextmanager
    def watch(self, interval: float = 0.25) -> Iterator[QueueWatch]:
        """Poll ``squeue`` in a thread while the block runs (:class:`QueueWatch`)."""
        seen = QueueWatch()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    seen.add(self.jobs())
                stop.wait(interval)

        thread = threading.Thread(target=poll, name="squeue-watch", daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            stop.set()
            thread.join(10)

    def stop(self) -> None:
        """Cancel every job, stop the daemons (slurmd, slurmctld, then a munged started here),
        wait for the jobs' processes to end; raise :class:`SlurmLeftoverError` if anything is
        left (after killing it)."""
        problems = []
        try:
            if "slurmctld" in self.daemons and _alive(self.daemons["slurmctld"].pid):
                self.cancel_all()
        except Exception as exc:  # still stop the daemons
            problems.append(f"cancel: {exc}")
        deadline = time.monotonic() + 20
        while self.job_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.get(name)
            if proc is not None and not _stop(proc):
                problems.append(f"{name} (pid {proc.pid}) survived SIGKILL")
        left = self.leftovers()
        for pid in left.get("job processes", []):  # type: ignore[union-attr]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            problems.append(f"left after stop: {left}")
        if problems:
            raise SlurmLeftoverError("; ".join(problems))


@contextlib.contextmanager
def single_node_slurm(
    root: Path, cpus: int = 2, memory_mb: int = 2048, export: bool = True
) -> Iterator[SlurmCluster]:
    """Start a single-node SLURM cluster under ``root`` (see the module docstring); with
    ``export``, ``SLURM_CONF`` is set in ``os.environ`` while it runs (restored after)."""
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    root = Path(root).resolve()
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cluster = SlurmCluster(
        dir=root, name=f"pesflow{secrets.token_hex(3)}", node=socket.gethostname(), cpus=cpus
    )
    cluster.conf.write_text(_conf(root, cluster.name, cluster.node, cpus, memory_mb))
    before = os.environ.get("SLURM_CONF")
    try:
        munged = _start_munged(root / "log" / "munged.log")
        if munged is not None:
            cluster.daemons["munged"] = munged
        env = {**os.environ, **cluster.env}
        for daemon in ("slurmctld", "slurmd"):
            with open(root / "log" / f"{daemon}.out", "ab") as out:
                cluster.daemons[daemon] = subprocess.Popen(
                    [_which(daemon) or daemon, "-D", "-f", str(cluster.conf)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        cluster.wait_idle()
        if export:
            os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        if export:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before
        cluster.stop()
