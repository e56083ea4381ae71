"""Processes a test starts in their own session: check and stop the whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def group_alive(pgid: int) -> bool:
    """Any process left in process group ``pgid``?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """Wait up to ``timeout`` s for every process of group ``pgid`` to end; ``True`` if so."""
    t_end = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < t_end:
        time.sleep(0.05)
    return not group_alive(pgid)


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> bool:
    """SIGTERM the group of ``proc`` (started with ``start_new_session=True``), SIGKILL it
    after ``grace`` s; ``True`` when no process of the group is left 10 s later."""
    pgid = proc.pid  # a new session: the group id is the leader's pid
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(5)
    return wait_group_gone(pgid)
