"""Engines for tests (workflows.engine): replace one step, or submit labels through a callback."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from workflows.engine import InProcess


class Replacing(InProcess):
    """In-process, with some steps replaced: ``Replacing({train_step: my_train})``."""

    def __init__(self, replace: dict[Callable[..., Any], Callable[..., Any]], label_slots: int = 8):
        super().__init__(label_slots)
        self.replace = replace

    def call(self, step, *args):
        return self.replace.get(step, step)(*args)


class Submitting(InProcess):
    """Labels through ``submit(label_id, worker) -> Future`` with ``label_slots`` slots."""

    def __init__(self, submit: Callable[[int, str], Future], label_slots: int = 8):
        super().__init__(label_slots)
        self._submit = submit

    def submit(self, step, *args):
        _handle, label_id, worker = args
        return self._submit(label_id, worker)
