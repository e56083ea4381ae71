"""Where the steps run: the engine is bound in one place.

The campaign loop (:func:`workflows.loop.campaign_loop`) calls every step through an
:class:`Engine`: ``call`` one step and wait for its result, ``map`` one step over many argument
tuples (the walkers of an iteration), ``submit`` one step and get a
``concurrent.futures.Future`` (the labels, ``label_slots`` at a time). :class:`InProcess` runs
them in this thread (tests, benchmarks); :class:`workflows.flows.PrefectEngine` runs each step
as a Prefect task through the flow's task runner (threads, or Dask on a cluster). The steps
themselves are plain functions of ``(campaign handle, iteration id)`` that know nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Engine", "InProcess"]

R = TypeVar("R")


@runtime_checkable
class Engine(Protocol):
    """Runs steps (see the module docstring)."""

    label_slots: int

    def call(self, step: Callable[..., R], *args: Any) -> R:
        """Run ``step(*args)`` and return its result (raises what it raised)."""
        ...

    def map(self, step: Callable[..., R], calls: Sequence[tuple[Any, ...]]) -> list[R]:
        """Run ``step(*args)`` for every tuple of ``calls`` (concurrently where the engine
        can); results in the order of ``calls``."""
        ...

    def submit(self, step: Callable[..., R], *args: Any) -> Future[R]:
        """Start ``step(*args)``; its future holds the result or the exception."""
        ...


@dataclass
class InProcess:
    """Every step in the calling thread, one after the other (``submit`` runs at once)."""

    label_slots: int = 8

    def call(self, step: Callable[..., R], *args: Any) -> R:
        return step(*args)

    def map(self, step: Callable[..., R], calls: Sequence[tuple[Any, ...]]) -> list[R]:
        return [step(*args) for args in calls]

    def submit(self, step: Callable[..., R], *args: Any) -> Future[R]:
        fut: Future[R] = Future()
        try:
            fut.set_result(step(*args))
        except Exception as exc:  # handed to the caller through the future
            fut.set_exception(exc)
        return fut
