"""One writer per campaign: the process that runs a campaign holds its lease.

:func:`hold` takes the lease (refused with :class:`database.LeaseHeldError`, naming the holder,
while another live process holds it — or waits for it when asked), keeps it alive with a
heartbeat thread, and gives it back with the run's final status. A run that ends with an
exception ends the campaign ``failed`` (a recorded stop such as too many DFT failures) or
``interrupted`` (anything else, SIGTERM from a batch system included, with the error as the
reason): never ``running``. A process that dies stops heartbeating; after ``ttl_s`` the campaign
reads as ``interrupted`` and the next run takes it over (at once when the dead holder was a
process of this very machine and pid namespace, see :func:`holder_is_gone`).

The campaign loop calls :meth:`Lease.check` at every step boundary and the label step stops
claiming new DFT work as soon as the heartbeat finds the lease taken over: a holder that
stalled past its expiry (a database outage, a suspended process) stops before writing more.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Lease",
    "Terminated",
    "current",
    "hold",
    "holder_is_gone",
    "process_identity",
    "terminate_on_sigterm",
]

log = logging.getLogger(__name__)
_held: dict[int, Lease] = {}
_held_lock = threading.Lock()


class Terminated(BaseException):
    """The process received SIGTERM (``scancel``, a batch time limit, ``docker stop``)."""


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (so a run ends
    its campaign ``interrupted`` and gives its lease back, as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated("terminated by SIGTERM (scancel, a batch time limit, docker stop...)")

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
    ``None`` when no such process exists here."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def process_identity(pid: int | None = None) -> str | None:
    """``<boot id>/<pid namespace>/<start time>`` of a process of this machine (default: this
    one), or ``None`` where /proc does not tell (then only the lease expiry judges it)."""
    pid = os.getpid() if pid is None else pid
    boot, ns, start = _boot_id(), _pid_namespace(), _start_time(pid)
    if not (boot and ns and start):
        return None
    return f"{boot}/{ns}/{start}"


def holder_is_gone(lease: Any) -> bool:
    """Whether a lease's holder is provably dead: a process of this machine's boot and pid
    namespace that no longer exists (or whose pid now belongs to a newer process). A holder
    elsewhere (another host, container or pid namespace) is judged by the lease expiry only."""
    if not lease.process or lease.host != socket.gethostname():
        return False
    boot, ns, _ = lease.process.split("/", 2)
    if boot != _boot_id() or ns != _pid_namespace():
        return False
    return process_identity(lease.pid) != lease.process


@dataclass
class Lease:
    """A held campaign lease (see module docstring). ``final`` is the (status, message) the
    run ends with, set by the caller before the ``hold`` block exits normally."""

    store: Any
    campaign_id: int
    token: str
    ttl_s: float
    purpose: str
    final: tuple[str, str | None] | None = None
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def check(self) -> None:
        """Raise :class:`database.LeaseLostError` unless this process still holds the lease
        (asked of the database, and renewed on the way: a heartbeat that missed its window
        during an outage does not end a run nobody took over)."""
        from database import LeaseLostError

        if not self.lost.is_set() and self._renew() is not None:
            return
        self.lost.set()
        other = self.store.get_lease(self.campaign_id)
        by = f"{other.holder} holds it now" if other is not None else "it was given back"
        raise LeaseLostError(
            f"this process no longer holds campaign {self.campaign_id} ({by}); stopping "
            "before writing more"
        )

    def finish(self, status: str, message: str | None) -> None:
        """The status the campaign ends with when the ``hold`` block exits."""
        self.final = (status, message)

    def _renew(self):
        return self.store.renew_lease(self.campaign_id, self.token, self.ttl_s)

    def _beat(self) -> None:
        interval = max(0.2, self.ttl_s / 4)
        while not self._stop.wait(interval):
            try:
                rec = self._renew()
            except Exception as exc:  # database unavailable: try again at the next beat
                log.warning("lease heartbeat of campaign %s failed: %s", self.campaign_id, exc)
                continue
            if rec is None:  # another process took it over (or it was released): for good
                self.lost.set()
                log.error("lease on campaign %s was taken over", self.campaign_id)
                return


def current(campaign_id: int) -> Lease | None:
    """The lease this process holds on the campaign, if any."""
    with _held_lock:
        return _held.get(campaign_id)


def _end_status(exc: BaseException) -> tuple[str, str]:
    from .context import CampaignFailedError

    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]
    if isinstance(exc, CampaignFailedError):
        return "failed", " ".join(str(exc).split())[:2000]
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted by the user; `pesflow resume` continues"
    if isinstance(exc, Terminated):
        return "interrupted", f"{exc}; `pesflow resume` continues"
    return "interrupted", f"run stopped by an error: {text}; `pesflow resume` continues"


def _acquire(store, campaign_id, token, purpose, ttl, start_from, wait_s) -> None:
    from database import LeaseHeldError

    deadline = time.monotonic() + max(0.0, wait_s)
    dead = None  # a holder proven gone: taken over atomically by the next attempt
    while True:
        try:
            store.acquire_lease(
                campaign_id,
                token=token,
                host=socket.gethostname(),
                pid=os.getpid(),
                process=process_identity(),
                purpose=purpose,
                ttl_s=ttl,
                start_from=start_from,
                take_over=None if dead is None else dead.token,
            )
            if dead is not None:
                log.warning("campaign %s: %s is gone; took over", campaign_id, dead.holder)
            return
        except LeaseHeldError as exc:
            if holder_is_gone(exc.lease) and (dead is None or exc.lease.token != dead.token):
                dead = exc.lease
                continue
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(2.0, max(0.1, ttl / 8)))


@contextmanager
def hold(
    store,
    campaign_id: int,
    *,
    purpose: str,
    ttl_s: float | None = None,
    start_from: Collection[str] | None = None,
    wait_s: float = 0.0,
) -> Iterator[Lease]:
    """Hold the campaign's lease for the block (see module docstring).

    ``purpose`` is shown to whoever is refused (``pesflow run``, ``api run <id>``,
    ``deployment run``); ``start_from`` restricts the statuses the run may start from (a queued
    API run honours a pause sent before it started); ``wait_s`` > 0 waits that long for a held
    lease to be given back instead of refusing at once. The lease is re-entrant per process:
    a block inside a block of the same campaign reuses the outer lease."""
    outer = current(campaign_id)
    if outer is not None:
        yield outer
        return
    from .settings import get_settings

    ttl = ttl_s if ttl_s is not None else get_settings().lease_ttl_s
    token = uuid.uuid4().hex
    _acquire(store, campaign_id, token, purpose, ttl, start_from, wait_s)
    lease = Lease(store, campaign_id, token, ttl, purpose)
    lease._thread = threading.Thread(
        target=lease._beat, name=f"pesflow-lease-{campaign_id}", daemon=True
    )
    lease._thread.start()
    with _held_lock:
        _held[campaign_id] = lease
    status: str | None = None
    message: str | None = None
    try:
        yield lease
        if lease.final is not None:
            status, message = lease.final
    except BaseException as exc:
        status, message = _end_status(exc)
        raise
    finally:
        lease._stop.set()
        lease._thread.join(timeout=10)
        with _held_lock:
            _held.pop(campaign_id, None)
        try:
            store.release_lease(campaign_id, token, status=status, message=message)
        except Exception as exc:  # the database may be what failed: the lease then expires
            log.warning("could not release the lease of campaign %s: %s", campaign_id, exc)
