"""Wall-clock intervals spent inside the expensive work (MD, labelling, training).

Used to measure the orchestration overhead: campaign wall time minus the length of the union
of these intervals (concurrent work is counted once). Process-local and thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["busy_seconds", "clear", "compute", "intervals"]

_lock = threading.Lock()
_intervals: list[tuple[str, float, float]] = []


@contextmanager
def compute(kind: str) -> Iterator[None]:
    """Record the wall-clock interval of the enclosed work under ``kind``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        t1 = time.perf_counter()
        with _lock:
            _intervals.append((kind, t0, t1))


def intervals() -> list[tuple[str, float, float]]:
    """A copy of the recorded ``(kind, start, end)`` intervals (``time.perf_counter``)."""
    with _lock:
        return list(_intervals)


def clear() -> None:
    """Forget all recorded intervals."""
    with _lock:
        _intervals.clear()


def busy_seconds(since: float = float("-inf"), kinds: set[str] | None = None) -> float:
    """Length of the union of the intervals (of ``kinds``) that start after ``since``, s."""
    spans = sorted(
        (a, b) for k, a, b in intervals() if a >= since and (kinds is None or k in kinds)
    )
    total, cur_a, cur_b = 0.0, None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total
