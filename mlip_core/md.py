"""Exploration molecular dynamics with a committee uncertainty monitor.

A *walker* runs ASE dynamics (NVT Langevin, NPT Langevin-BAOAB barostat, or NVE velocity
Verlet) with any ASE calculator that reports committee results (CONTRIBUTING.md:
``calc.results["forces_committee"]`` of shape ``(K, N, 3)``). After every step the frame's
uncertainty is :func:`mlip_core.uncertainty.max_force_deviation` of the member forces
(absolute eV/Å, or relative if the spec says so) and the walker

- records a frame every ``record_every`` steps (step 0 included), with the kinetic
  (``temperature_K``) and thermostat target (``target_temperature_K``) temperatures;
- ramps the thermostat target linearly from ``temperature_K`` to ``temperature_end_K`` over
  the run (and the barostat's from ``pressure_GPa`` to ``pressure_end_GPa``) when those are set;
- stops at the first step whose uncertainty is ``>= hi`` (the model is lost there), at
  non-finite energies/forces, or at atoms closer than ``min_distance`` Å; the first
  failed frame is recorded and marked (``info["failed"] = True``) so the active-learning
  loop may label it.

A calculator that raises (``CommitteeCalculator`` raises ``FloatingPointError`` on
non-finite output and a ``ValueError`` on atoms too close) is diagnosed the same way:
non-finite positions, atoms too close, ``FloatingPointError`` -> "nan forces"; any other
exception after step 0 stops the walker as "calculator error". So a blow-up never raises
into the caller: it ends the walker with ``stop_reason`` set. Configuration errors (bad
spec, a calculator without committee results, any other exception on the very first
evaluation, e.g. an element the model does not know) do raise.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from numpy.typing import NDArray

from mlip_core.monitor import ExplorationStop, MonitorError, Trust, UncertaintyMonitor

__all__ = [
    "ENSEMBLES",
    "WalkerError",
    "WalkerResult",
    "WalkerSpec",
    "run_walker",
    "run_walkers",
]

ENSEMBLES = ("nvt", "npt", "nve")


class WalkerError(ValueError):
    """Bad walker configuration or a calculator that cannot drive a walker."""


@dataclass(frozen=True)
class WalkerSpec:
    """One exploration MD run.

    Attributes:
        ensemble: ``"nvt"`` (Langevin), ``"npt"`` (Langevin-BAOAB with a Langevin-Hoover
            barostat, ``ase.md.langevinbaoab.LangevinBAOAB``) or ``"nve"`` (velocity Verlet).
        temperature_K: thermostat target and initial Maxwell-Boltzmann temperature, K.
        pressure_GPa: external pressure for ``npt``, GPa.
        temperature_end_K: thermostat target at the last step, K; the target goes linearly
            from ``temperature_K`` at step 0 to this at step ``n_steps`` (``None``: constant).
        pressure_end_GPa: ``npt`` pressure at the last step, GPa, ramped likewise.
        timestep_fs: MD time step, fs.
        n_steps: number of steps to run (unless stopped early).
        record_every: keep a frame every this many steps (step 0 included).
        friction: Langevin friction, 1/fs (for ``npt`` the thermostat time is 1/friction).
        barostat_time_fs: barostat time constant for ``npt``, fs.
        hydrostatic: ``npt`` keeps the cell shape (isotropic volume changes) if True,
            otherwise the full cell fluctuates.
        seed: seeds the initial velocities and the thermostat noise.
        trust: the trust window and distance guard the walker is judged by
            (:class:`mlip_core.monitor.Trust`: ``lo``, ``hi``, relative deviation, energy
            levels, ``min_distance``).
        init_velocities: draw Maxwell-Boltzmann velocities; if False keep the start's momenta.
    """

    ensemble: str = "nvt"
    temperature_K: float = 300.0
    pressure_GPa: float = 0.0
    timestep_fs: float = 1.0
    n_steps: int = 1000
    record_every: int = 10
    friction: float = 0.01
    barostat_time_fs: float = 500.0
    hydrostatic: bool = True
    seed: int = 0
    trust: Trust = field(default_factory=Trust)
    init_velocities: bool = True
    temperature_end_K: float | None = None
    pressure_end_GPa: float | None = None

    def targets(self, step: int) -> tuple[float, float]:
        """Thermostat temperature (K) and pressure (GPa) targets at ``step`` (linear ramps)."""
        x = min(max(step / self.n_steps, 0.0), 1.0) if self.n_steps else 0.0
        t0, p0 = self.temperature_K, self.pressure_GPa
        t1 = t0 if self.temperature_end_K is None else self.temperature_end_K
        p1 = p0 if self.pressure_end_GPa is None else self.pressure_end_GPa
        return t0 + (t1 - t0) * x, p0 + (p1 - p0) * x

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise WalkerError(f"unknown ensemble {self.ensemble!r}; expected one of {ENSEMBLES}")
        positive = {
            "timestep_fs": self.timestep_fs,
            "friction": self.friction,
            "barostat_time_fs": self.barostat_time_fs,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise WalkerError(f"{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.temperature_K) and self.temperature_K >= 0):
            raise WalkerError(f"temperature_K must be finite and >= 0, got {self.temperature_K!r}")
        if not math.isfinite(self.pressure_GPa):
            raise WalkerError(f"pressure_GPa must be finite, got {self.pressure_GPa!r}")
        if self.ensemble != "nve" and self.temperature_K == 0:
            raise WalkerError(f"a thermostatted ({self.ensemble}) walker needs temperature_K > 0")
        t1, p1 = self.temperature_end_K, self.pressure_end_GPa
        if t1 is not None and not (math.isfinite(t1) and t1 > 0):
            raise WalkerError(f"temperature_end_K must be finite and > 0, got {t1!r}")
        if t1 is not None and self.ensemble == "nve":
            raise WalkerError("an nve walker has no thermostat to ramp: drop temperature_end_K")
        if p1 is not None and not math.isfinite(p1):
            raise WalkerError(f"pressure_end_GPa must be finite, got {p1!r}")
        if p1 is not None and self.ensemble != "npt":
            raise WalkerError(f"pressure_end_GPa on an {self.ensemble} walker: only npt has one")
        if int(self.n_steps) != self.n_steps or self.n_steps < 0:
            raise WalkerError(f"n_steps must be a non-negative integer, got {self.n_steps!r}")
        if int(self.record_every) != self.record_every or self.record_every < 1:
            raise WalkerError(f"record_every must be a positive integer, got {self.record_every!r}")
        if not isinstance(self.trust, Trust):
            raise WalkerError(f"trust must be a mlip_core.monitor.Trust, got {self.trust!r}")


@dataclass
class WalkerResult:
    """What one walker produced.

    ``frames``, ``deviations``, ``energies``, ``steps`` are aligned (one entry per recorded
    frame). Frames are independent ``Atoms`` copies without a calculator; their ``info``
    holds ``step``, ``time_fs``, ``temperature_K`` (kinetic), ``target_temperature_K`` (the
    thermostat's, ramped or not; ``target_pressure_GPa`` for npt), ``max_force_dev`` (eV/Å),
    ``uncertainty`` (the value compared with the trust window), ``mlip_energy`` (committee
    mean, eV), ``status`` (accurate / candidate / failed) and ``failed`` (True only for the
    frame that stopped the walker).
    """

    spec: WalkerSpec
    frames: list[Atoms]
    deviations: NDArray[np.float64]
    energies: NDArray[np.float64]
    steps: NDArray[np.int64]
    stopped_early: bool
    stop_step: int | None
    stop_reason: str | None
    n_steps_done: int
    step_deviations: NDArray[np.float64]
    wall_time_s: float
    start_index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    energy_deviations: NDArray[np.float64] | None = None  # max_devi_e per frame, eV/atom

    @property
    def labels(self) -> NDArray[np.str_]:
        """Trust class of each recorded frame (:meth:`WalkerSpec.status`)."""
        e = self.energy_deviations
        if e is None:
            e = np.full(len(self.deviations), np.nan)
        return np.array(
            [self.spec.trust.status(d, x) for d, x in zip(self.deviations, e, strict=True)],
            dtype="<U9",
        )

    @property
    def candidate_indices(self) -> NDArray[np.intp]:
        """Indices into ``frames`` of the labelling candidates (``lo <= x < hi``)."""
        return np.flatnonzero(self.labels == "candidate")

    @property
    def failed_frame(self) -> Atoms | None:
        """The frame that stopped the walker, if it was recorded."""
        for f in self.frames:
            if f.info.get("failed"):
                return f
        return None


def _make_dynamics(atoms: Atoms, spec: WalkerSpec, rng: np.random.Generator) -> MolecularDynamics:
    dt = spec.timestep_fs * units.fs
    if spec.ensemble == "nvt":
        return Langevin(
            atoms,
            dt,
            temperature_K=spec.temperature_K,
            friction=spec.friction / units.fs,
            fixcm=False,
            rng=rng,
        )
    if spec.ensemble == "npt":
        if not np.all(atoms.pbc) or atoms.cell.volume <= 0:
            raise WalkerError("an npt walker needs a fully periodic cell with non-zero volume")
        if atoms.constraints:  # ASE: "LangevinBAOAB has not been tested with constraints"
            raise WalkerError(
                "an npt walker does not honour constraints (fixed atoms moved 0.07 Å in 20 "
                f"steps with ASE's LangevinBAOAB): {', '.join(type(c).__name__ for c in atoms.constraints)}"
                " on the structure; use an nvt or nve walker"
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using heuristic P_mass")
            return LangevinBAOAB(
                atoms,
                dt,
                temperature_K=spec.temperature_K,
                # ASE stress convention: external stress = -pressure
                externalstress=-spec.pressure_GPa * units.GPa,
                hydrostatic=spec.hydrostatic,
                T_tau=units.fs / spec.friction,
                P_tau=spec.barostat_time_fs * units.fs,
                rng=rng,
            )
    return VelocityVerlet(atoms, dt)


def _set_targets(dyn: MolecularDynamics, spec: WalkerSpec, step: int) -> None:
    """Point the thermostat / barostat at the ramp's targets for ``step`` (no-op without a
    ramp). ``LangevinBAOAB`` reads ``externalstress`` at every step (a scalar when hydrostatic,
    else a 3x3 matrix)."""
    if spec.temperature_end_K is None and spec.pressure_end_GPa is None:
        return
    temperature, pressure = spec.targets(step)
    if spec.ensemble == "nve":
        return
    dyn.set_temperature(temperature_K=temperature)  # type: ignore[attr-defined]
    if spec.ensemble == "npt" and spec.pressure_end_GPa is not None:
        shape = np.shape(dyn.externalstress)  # type: ignore[attr-defined]
        dyn.externalstress = -pressure * units.GPa * (np.identity(3) if shape else 1.0)  # type: ignore[attr-defined]


def _init_velocities(atoms: Atoms, spec: WalkerSpec, rng: np.random.Generator) -> None:
    if not spec.init_velocities:
        return
    if spec.temperature_K == 0:
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    thermalize_momenta(atoms, spec.temperature_K, rng=rng)
    Stationary(atoms)
    # Angular momentum is conserved only without periodic boundaries: removing a rigid
    # rotation is meaningful (and harmless) only for a non-periodic system.
    if not np.any(atoms.pbc):
        with np.errstate(invalid="ignore", divide="ignore"):  # linear molecules: I_p = 0
            ZeroRotation(atoms)


def run_walker(
    atoms: Atoms, calculator: Calculator, spec: WalkerSpec, *, start_index: int = 0
) -> WalkerResult:
    """Run one exploration walker from ``atoms`` (not modified) with ``calculator``.

    The calculator must report ``results["forces_committee"]`` ``(K, N, 3)``; its mean
    ``forces`` (and ``stress`` for ``npt``) drive the dynamics.

    Returns:
        A :class:`WalkerResult`. ``stopped_early`` is True when the uncertainty reached
        ``spec.trust.hi``, forces/energies went non-finite, atoms came too close, or the
        calculator raised after step 0; ``stop_reason`` says which:
        ``"uncertainty above hi at step 120: 0.93 eV/Å"``, ``"nan forces at step N"``,
        ``"nan energy at step N"``, ``"atoms too close at step N: atoms i-j at d Å < ..."``,
        ``"nan positions at step N"``, ``"calculator error at step N: Type: message"``.

    Raises:
        WalkerError: the calculator reports no ``forces_committee``, or the spec does not
            fit the structure (``npt`` without a periodic cell).
        Exception: whatever the calculator raised on the start structure, unless it is a
            blow-up diagnosed as above.
    """
    if len(atoms) == 0:
        raise WalkerError("cannot run a walker on a structure with no atoms")
    t0 = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    work = atoms.copy()
    work.calc = calculator
    _init_velocities(work, spec, rng)
    monitor = UncertaintyMonitor(spec.trust, spec.record_every)

    def state(step: int) -> dict[str, float]:
        target_t, target_p = spec.targets(step)
        out = {
            "time_fs": step * spec.timestep_fs,
            "temperature_K": float(work.get_temperature()),
            "target_temperature_K": target_t,
        }
        if spec.ensemble == "npt":
            out["target_pressure_GPa"] = target_p
        return out

    def observe(step: int) -> None:
        try:
            monitor.observe(work, step, **state(step))
        except MonitorError as exc:
            raise WalkerError(str(exc).replace("exploration needs", "a walker needs")) from exc

    def diagnose(exc: Exception, step: int) -> ExplorationStop | None:
        return monitor.diagnose(work, exc, step, **state(step))

    stop_step: int | None = None
    stop_reason: str | None = None
    done = 0
    try:
        try:
            # LangevinBAOAB evaluates forces in its constructor, the others in irun's
            # first next(): both are step 0.
            dyn = _make_dynamics(work, spec, rng)
            it = dyn.irun(steps=int(spec.n_steps))
            next(it)
        except WalkerError:
            raise
        except Exception as exc:
            stop = diagnose(exc, 0)
            if stop is None:
                raise
            raise stop from exc
        observe(0)
        while True:
            try:
                _set_targets(dyn, spec, done + 1)
                next(it)
            except StopIteration:
                break
            except Exception as exc:  # a blow-up inside the calculator/integrator
                stop = diagnose(exc, done + 1)
                assert stop is not None
                raise stop from exc
            done = int(dyn.nsteps)
            observe(done)
    except ExplorationStop as stop:
        stop_reason = stop.reason
        stop_step = len(monitor.trace) - 1
        done = max(done, stop_step)
    finally:
        work.calc = None

    frames = monitor.frames
    info = [f.info for f in frames]
    return WalkerResult(
        spec=spec,
        frames=frames,
        deviations=np.asarray([i["uncertainty"] for i in info], dtype=np.float64),
        energies=np.asarray([i["mlip_energy"] for i in info], dtype=np.float64),
        steps=np.asarray([i["step"] for i in info], dtype=np.int64),
        stopped_early=stop_reason is not None,
        stop_step=stop_step,
        stop_reason=stop_reason,
        n_steps_done=done,
        step_deviations=np.asarray(monitor.trace, dtype=np.float64),
        wall_time_s=time.perf_counter() - t0,
        start_index=start_index,
        energy_deviations=np.asarray([i["max_devi_e"] for i in info], dtype=np.float64),
    )


def run_walkers(
    starts: Sequence[Atoms],
    calculator_factory: Callable[[], Calculator],
    specs: Sequence[WalkerSpec],
) -> list[WalkerResult]:
    """Run every spec from every start structure, one after the other.

    Walkers run sequentially in ``starts``-major order (``starts[0]`` with every spec, then
    ``starts[1]``, ...); the workflow layer parallelises. ``calculator_factory`` is called
    once per walker (it may return a shared calculator). Each spec's seed is used as given.
    ``WalkerResult.start_index`` tells which start a result came from.
    """
    if len(starts) == 0 or len(specs) == 0:
        raise WalkerError(
            f"need at least one start structure and one spec, got {len(starts)} and {len(specs)}"
        )
    results = []
    for i, start in enumerate(starts):
        for spec in specs:
            results.append(run_walker(start, calculator_factory(), spec, start_index=i))
    return results
