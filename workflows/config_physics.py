"""Physics checks of a campaign on its initial structures (what the config sections alone cannot
see): the MD time step against the lightest element, NPT walkers only on bulk structures, and the
labeler's own pre-flight (elements it supports, pseudopotentials / basis sets, executable).

:func:`structure_problems` returns ``(errors, warnings)``; ``pesflow validate`` and the start of a
campaign raise the first error and print / log the warnings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .structure_text import VACUUM_GAP, vacuum_gap

__all__ = ["VACUUM_GAP", "max_timestep_fs", "structure_problems", "vacuum_gap"]


def max_timestep_fs(atoms: Any) -> float:
    """A stable Verlet step for the lightest element, fs: sqrt(m / amu) (1 fs for H, 8 fs for
    Cu) — about a tenth of the fastest vibrational period; a larger step is warned about, twice
    it refused."""
    return math.sqrt(float(np.min(atoms.get_masses())))


def _band_problems(key: str, walker: Any, atoms_list: Sequence[Any]) -> list[str]:
    """A band between two of the initial structures that cannot be one (stored endpoints are
    checked when the band runs)."""
    from mlip_core.neb import endpoint_problem

    ends = (walker.initial, walker.final)
    if not all(isinstance(e, int) and e < len(atoms_list) for e in ends):
        return []
    problem = endpoint_problem(atoms_list[ends[0]], atoms_list[ends[1]], walker.max_atom_move)
    return [f"{key}: {problem}"] if problem else []


def structure_problems(
    cfg: Any, atoms_list: Sequence[Any], names: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Errors and warnings of ``cfg`` on its initial structures (see module docstring); each
    names the config key and a likely fix. ``names``: where each structure comes from
    (``structures[0].file``), default ``initial structure <j>``."""
    names = (
        list(names)
        if names is not None
        else [f"initial structure {j}" for j in range(len(atoms_list))]
    )
    errors: list[str] = []
    warnings: list[str] = []
    n = len(atoms_list)
    for i, w in enumerate(cfg.exploration.walkers):
        if getattr(w, "kind", "md") == "neb":
            errors += _band_problems(f"exploration.walkers[{i}]", w, atoms_list)
        if getattr(w, "kind", "md") != "md":
            continue  # time steps and ensembles are MD's
        key = f"exploration.walkers[{i}]"
        starts = [w.start] if w.start is not None else range(n)
        for j in starts:
            atoms = atoms_list[j % n]
            limit = max_timestep_fs(atoms)
            light = atoms.get_chemical_symbols()[int(np.argmin(atoms.get_masses()))]
            if w.timestep > 2 * limit:
                errors.append(
                    f"{key}.timestep={w.timestep:g} fs is more than twice a stable step for "
                    f"{light} ({limit:.1f} fs): the MD would blow up; use <= {limit:.1f} fs"
                )
            elif w.timestep > limit:
                warnings.append(
                    f"{key}.timestep={w.timestep:g} fs exceeds a stable step for {light} "
                    f"({limit:.1f} fs); walkers may be cut for energy drift"
                )
            if w.ensemble != "npt":
                continue
            if not all(atoms.pbc):
                errors.append(
                    f"{key}: npt on {names[j % n]}, which is not periodic along "
                    f"{''.join('abc'[k] for k in range(3) if not atoms.pbc[k])}: use nvt"
                )
                continue
            k, gap = vacuum_gap(atoms)
            if gap > VACUUM_GAP:
                errors.append(
                    f"{key}: npt on {names[j % n]}, which has {gap:.1f} Å of vacuum "
                    f"along {'abc'[k]}: the barostat would collapse it; use nvt"
                )
    errors += _one_state_per_geometry(atoms_list, names)
    errors += _labeler_problems(cfg, atoms_list, names, warnings)
    return errors, warnings


def _one_state_per_geometry(atoms_list: Sequence[Any], names: Sequence[str]) -> list[str]:
    """The committee has no spin or charge input: two structures of one geometry with
    different moments or charges (an antiferromagnetic and a ferromagnetic copy) would give two
    energies for one input."""
    from database.hashing import structure_hash
    from structure_checks.state import physical_state

    seen: dict[str, tuple[int, dict]] = {}
    for j, a in enumerate(atoms_list):
        key = structure_hash(a.numbers, a.positions, a.cell.array, a.pbc)
        state = {k: v for k, v in physical_state(a).items() if k != "constraints"}
        if key in seen and seen[key][1] != state:
            return [
                f"{names[j]} has the geometry of {names[seen[key][0]]} with other initial "
                "moments or charges: the committee has no spin or charge input, so one campaign "
                "cannot learn both states; run them as separate campaigns"
            ]
        seen.setdefault(key, (j, state))
    return []


def _labeler_problems(
    cfg: Any, atoms_list: Sequence[Any], names: Sequence[str], warnings: list[str]
) -> list[str]:
    """The labeler's pre-flight on each initial structure, with the labeler built as the run
    builds it: from the config and, when it names one, the operator's execution profile
    resolved with this process's settings (an unknown profile is an error here, not at run
    time). A missing executable is only a warning when tasks run on a cluster (the code is
    installed there)."""
    from .config import ConfigError
    from .labeler import make_labeler
    from .profiles import resolve_execution

    try:
        execution = resolve_execution(cfg.execution)
        labeler = make_labeler(cfg)
    except ConfigError as exc:
        return [str(exc)]
    remote = execution.task_runner == "dask"
    errors = []
    for j, atoms in enumerate(atoms_list):
        failure = labeler.preflight(atoms)
        if failure is None:
            continue
        text = f"{names[j]}: {failure.message}"
        if failure.kind.value == "missing_executable" and remote:
            warnings.append(text + " (here; the cluster nodes must have it)")
        else:
            errors.append(text)
    return errors
