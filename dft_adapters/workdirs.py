"""Attempt directories and input snapshots of :meth:`dft_adapters.base.Labeler.label`:
the caller's ``Atoms`` copied without calculator and constraints, ``attempt-<i>`` directories
created fresh, failed ones kept as ``attempt-<i>.failed-<kind>``, successful ones optionally
removed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ase import Atoms

from .results import FailureKind
from .settings import json_types

__all__ = ["fresh_dir", "keep_failed", "plain", "remove_tree", "snapshot", "str_or_none"]


def snapshot(atoms: Atoms) -> Atoms:
    """An independent copy without calculator and without constraints (the caller's object
    is never touched): a label is the energy, forces and stress of the structure as it is —
    constraints act on dynamics, and ASE would zero the forces on fixed atoms."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"label() needs an ase.Atoms, got {type(atoms).__name__}")
    copy = atoms.copy()
    copy.calc = None
    copy.set_constraint()
    return copy


def fresh_dir(path: Path) -> Path:
    """Create ``path`` (or ``path-1``, ``path-2`` ... if taken) and return it."""
    candidate, k = path, 0
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            k += 1
            candidate = path.with_name(f"{path.name}-{k}")


def keep_failed(path: Path, kind: FailureKind) -> Path:
    """Rename a failed attempt's directory ``<name>.failed-<kind>`` (kept for inspection)."""
    target, k = path.with_name(f"{path.name}.failed-{kind.value}"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.failed-{kind.value}-{k}")
    try:
        path.rename(target)
    except OSError:
        return path
    return target


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything in it (errors ignored)."""
    shutil.rmtree(path, ignore_errors=True)


def plain(resolved: dict[str, Any]) -> dict[str, Any]:
    """Resolved inputs as JSON types (as they are stored and re-read); as given if they cannot
    be (the outcome is then returned but not persisted, with a warning)."""
    try:
        return json_types(resolved)
    except (TypeError, ValueError):
        return dict(resolved)


def str_or_none(path: Path | None) -> str | None:
    """``str(path)``, or ``None`` for ``None``."""
    return None if path is None else str(path)
