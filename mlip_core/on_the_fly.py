"""On-the-fly learning: one long MD that pauses at the first step the committee doubts.

:func:`run_segment` integrates a walker from a :class:`WalkerState` (positions, momenta, cell
and the walker step) with a committee calculator, judging every step with the
:class:`~mlip_core.monitor.UncertaintyMonitor`, and returns at the first step that needs a label
(:func:`otf_action`):

- ``accurate`` (uncertainty ``< lo``): go on;
- ``candidate`` (``lo <= x < hi``): pause; the frame is labelled, the model updated and the MD
  continues *from that frame* (the next segment starts from it and does not judge it again);
- ``failed`` by the trust window (``>= hi``): the step is not trusted; the frame is labelled,
  the model updated and the step *redone* from the state before it (at most ``max_redos`` times
  in a row, then the walker stops: the model stays lost there).

A segment is deterministic given its start state and the spec's seed (the thermostat noise is
seeded by the seed and the start step), so re-running a segment after a crash gives the same
frame. A barostat's internal momentum is not part of the state (an NPT walker's cell
continues, its barostat restarts at each segment).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from numpy.typing import NDArray

from mlip_core.md import WalkerSpec, _init_velocities, _make_dynamics, _set_targets
from mlip_core.monitor import ExplorationStop, UncertaintyMonitor
from mlip_core.selection import ACCURATE, CANDIDATE

__all__ = ["CONTINUE", "END", "LABEL", "REDO", "STOP", "Segment", "WalkerState", "otf_action"]

CONTINUE, LABEL, REDO, END, STOP = "continue", "label", "redo", "end", "stop"
_REDO_REASONS = ("uncertainty above hi", "energy deviation above energy_hi")


def otf_action(status: str) -> str:
    """What on-the-fly MD does with a step of trust class ``status``: ``continue`` (accurate),
    ``label`` (candidate: label, update, continue from the frame) or ``redo`` (failed: label,
    update, repeat the step from the state before it)."""
    if status == ACCURATE:
        return CONTINUE
    if status == CANDIDATE:
        return LABEL
    return REDO


@dataclass(frozen=True)
class WalkerState:
    """Where a walker stands: its step, positions (Å), momenta (amu Å/fs ASE units), cell,
    and how many times in a row the step after it was redone."""

    step: int
    positions: NDArray[np.float64]
    momenta: NDArray[np.float64]
    cell: NDArray[np.float64]
    redos: int = 0

    @classmethod
    def of(cls, atoms: Atoms, step: int, redos: int = 0) -> WalkerState:
        """The state of ``atoms`` at walker step ``step``."""
        return cls(
            int(step),
            np.array(atoms.positions, dtype=np.float64),
            np.array(atoms.get_momenta(), dtype=np.float64),
            np.array(atoms.cell[:], dtype=np.float64),
            int(redos),
        )

    def apply(self, template: Atoms) -> Atoms:
        """A copy of ``template`` (species, constraints, tags...) at this state."""
        out = template.copy()
        out.set_cell(self.cell, scale_atoms=False)
        out.positions = self.positions
        out.set_momenta(self.momenta, apply_constraint=False)
        return out

    def save(self, path: Path, action: str) -> None:
        """Write the state and the segment's ``action`` to ``path`` (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            step=self.step,
            positions=self.positions,
            momenta=self.momenta,
            cell=self.cell,
            redos=self.redos,
            action=np.array(action),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple[WalkerState, str]:
        """A state written by :meth:`save` and its segment's action."""
        with np.load(path) as z:
            state = cls(int(z["step"]), z["positions"], z["momenta"], z["cell"], int(z["redos"]))
            return state, str(z["action"])


@dataclass
class Segment:
    """One segment of on-the-fly MD: ``action`` (``label``, ``redo``, ``end`` at the walker's
    last step, ``stop`` when the walker cannot go on), the ``frame`` to label (its ``info`` as
    the monitor records it: ``step``, ``uncertainty``, ``max_force_dev``, ``status``...), the
    ``state`` the next segment starts from, the steps integrated, the accurate ones among them,
    their uncertainties and why the walker stopped."""

    action: str
    frame: Atoms | None
    state: WalkerState
    n_steps: int
    n_accurate: int
    deviations: list[float]
    stop_reason: str | None
    wall_time_s: float


def run_segment(
    template: Atoms,
    start: WalkerState | None,
    calculator: Calculator,
    spec: WalkerSpec,
    max_redos: int = 3,
) -> Segment:
    """Run on-the-fly MD from ``start`` (``None``: step 0 of ``template`` with fresh
    velocities, judged too) until a step needs a label or the walker reaches ``spec.n_steps``
    (see the module docstring). ``template`` is not modified."""
    t0 = time.perf_counter()
    step0 = 0 if start is None else start.step
    rng = np.random.default_rng([int(spec.seed), step0])
    work = template.copy() if start is None else start.apply(template)
    work.calc = calculator
    if start is None:
        _init_velocities(work, spec, rng)
    monitor = UncertaintyMonitor(spec.trust, record_every=1)
    devs: list[float] = []
    n_acc = 0

    def extra(step: int) -> dict[str, float]:
        target_t, _ = spec.targets(step)
        return {
            "time_fs": step * spec.timestep_fs,
            "temperature_K": float(work.get_temperature()),
            "target_temperature_K": target_t,
        }

    def done(action: str, frame: Atoms | None, state: WalkerState, why: str | None = None):
        return Segment(action, frame, state, len(devs), n_acc, devs, why, time.perf_counter() - t0)

    try:
        dyn = _make_dynamics(work, spec, rng)
        if start is None:  # the start frame is judged once; a continued one was just labelled
            try:
                status = monitor.observe(work, 0, **extra(0))
            except ExplorationStop as stop:
                status = "failed" if _redoable(stop) else ""
                if not status:
                    return done(STOP, None, WalkerState.of(work, 0), stop.reason)
            devs.append(monitor.trace[-1])
            if status != ACCURATE:  # nothing before step 0 to redo from: continue from it
                return done(LABEL, monitor.frames[-1], WalkerState.of(work, 0))
            n_acc += 1
        for step in range(step0 + 1, int(spec.n_steps) + 1):
            before = WalkerState.of(work, step - 1)
            monitor.frames.clear()
            _set_targets(dyn, spec, step)
            try:
                dyn.run(steps=1)
                status = monitor.observe(work, step, **extra(step))
            except ExplorationStop as stop:
                devs.append(monitor.trace[-1])
                if not _redoable(stop) or not monitor.frames:
                    return done(STOP, None, before, stop.reason)
                redos = start.redos + 1 if start is not None and start.step == step - 1 else 1
                if redos > max_redos:
                    why = f"{stop.reason}; still above after {max_redos} update(s)"
                    return done(STOP, None, before, why)
                return done(REDO, monitor.frames[-1], replace(before, redos=redos))
            except Exception as exc:  # a blow-up in the calculator or the integrator
                stop = monitor.diagnose(work, exc, step, **extra(step))
                reason = stop.reason if stop else f"calculator error at step {step}: {exc}"
                return done(STOP, None, before, reason)
            devs.append(monitor.trace[-1])
            if otf_action(status) == LABEL:
                return done(LABEL, monitor.frames[-1], WalkerState.of(work, step))
            n_acc += 1
        return done(END, None, WalkerState.of(work, max(step0, int(spec.n_steps))))
    finally:
        work.calc = None


def _redoable(stop: ExplorationStop) -> bool:
    return stop.reason.startswith(_REDO_REASONS)
