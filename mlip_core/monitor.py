"""The committee uncertainty monitor: an observer for any ASE dynamics or optimizer.

:class:`UncertaintyMonitor` measures a structure whose calculator reports committee results
(``results["forces_committee"]`` ``(K, N, 3)``, CONTRIBUTING.md), classifies it with the trust
window, records frames and raises :class:`ExplorationStop` where the exploration must end (the
model is lost: uncertainty ``>= hi``; non-finite energy or forces; atoms closer than
``min_distance``). Attach it to ASE's ``Dynamics.attach`` (MD, optimizers, NEB) or call
:meth:`UncertaintyMonitor.observe` yourself::

    monitor = UncertaintyMonitor(trust, record_every=10)
    dyn.attach(lambda: monitor.observe(atoms, dyn.nsteps), interval=1)

Recorded frames are calculator-free ``Atoms`` copies whose ``info`` holds ``step``,
``max_force_dev`` (absolute, eV/Å), ``max_devi_e`` (eV/atom), ``max_devi_v`` (eV/atom),
``uncertainty`` (the value compared with the window), ``mlip_energy`` (committee mean, eV),
``status`` (accurate / candidate / failed), ``failed`` and whatever ``extra`` the caller adds.

The distance guard (:class:`DistanceGuard`) is relative to the element pair by default: two
atoms are too close below ``fraction`` x the sum of their covalent radii
(``ase.data.covalent_radii``, Cordero et al., Dalton Trans. 2008); an absolute ``min_distance``
overrides it (0: no check). :class:`mlip_core.calculator.CommitteeCalculator` takes the same
guard, so the monitor and the calculator apply one rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii

from mlip_core.neighbors import neighbor_pairs
from mlip_core.selection import ACCURATE, CANDIDATE, FAILED, TrustWindow
from mlip_core.uncertainty import frame_deviations, max_devi_e, max_force_deviation

__all__ = [
    "MIN_DISTANCE_FRACTION",
    "DistanceGuard",
    "ExplorationStop",
    "MonitorError",
    "Trust",
    "TrustError",
    "UncertaintyMonitor",
]

MIN_DISTANCE_FRACTION = 0.6
"""Default guard: atoms closer than 0.6 x the sum of their covalent radii are fused (Cu-Cu:
1.58 Å). EMT Cu at 2500 K (108 atoms, two 1 ps Langevin runs, 1 fs steps) comes no closer
than 1.86 Å (0.70 x 2.64 Å); a fused pair seen in a committee's 2500 K run was at 0.80 Å."""


class MonitorError(ValueError):
    """A calculator that cannot be monitored (no committee results)."""


class TrustError(ValueError):
    """A trust window that cannot judge anything (see :class:`Trust`)."""


class ExplorationStop(Exception):
    """The exploration must end here; ``reason`` says why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DistanceGuard:
    """When two atoms are too close to trust anything computed there (fused atoms).

    Attributes:
        min_distance: absolute limit for every pair, Å (0: no check); ``None``: the relative
            rule below.
        fraction: the limit of a pair (i, j) is ``fraction * (r_cov(Z_i) + r_cov(Z_j))`` with
            ``ase.data.covalent_radii`` (Cordero et al. 2008), used when ``min_distance`` is
            ``None``.

    Raises:
        TrustError: ``min_distance`` negative or not finite, ``fraction`` not in (0, 2].
    """

    min_distance: float | None = None
    fraction: float = MIN_DISTANCE_FRACTION

    def __post_init__(self) -> None:
        md = self.min_distance
        if md is not None and not (math.isfinite(md) and md >= 0):
            raise TrustError(f"min_distance must be finite and >= 0, got {md!r}")
        if not (math.isfinite(self.fraction) and 0 < self.fraction <= 2):
            raise TrustError(f"min_distance_fraction must be in (0, 2], got {self.fraction!r}")

    @property
    def off(self) -> bool:
        """True when nothing is checked (``min_distance == 0``)."""
        return self.min_distance == 0

    def limit(self, zi: int, zj: int) -> float:
        """The closest allowed distance of elements ``zi`` and ``zj``, Å."""
        if self.min_distance is not None:
            return float(self.min_distance)
        return float(self.fraction * (covalent_radii[zi] + covalent_radii[zj]))

    def describe(self) -> str:
        """The rule in words (for messages)."""
        if self.min_distance is not None:
            return f"min_distance={self.min_distance:g} Å"
        return f"{self.fraction:g} x the sum of covalent radii"

    def violation(self, atoms: Atoms) -> tuple[float, int, int, float] | None:
        """The closest pair (periodic images included) under its limit, as
        ``(distance Å, i, j, limit Å)``; ``None`` when every pair is far enough or the guard
        is off."""
        if self.off or len(atoms) == 0:
            return None
        z = np.asarray(atoms.numbers)
        present = np.unique(z)
        cutoff = max(self.limit(a, b) for a in present for b in present)
        if cutoff <= 0:
            return None
        i, j, _, d = neighbor_pairs(atoms, cutoff)
        if self.min_distance is None:
            lim = self.fraction * (covalent_radii[z[i]] + covalent_radii[z[j]])
        else:
            lim = np.full(d.shape, cutoff)
        bad = np.flatnonzero(d < lim)
        if bad.size == 0:
            return None
        k = bad[np.argmin(d[bad] / lim[bad])]
        return float(d[k]), int(i[k]), int(j[k]), float(lim[k])

    def message(self, atoms: Atoms, found: tuple[float, int, int, float]) -> str:
        """``atoms 3-17 (Cu-Cu) at 0.800 Å < 1.584 Å (0.6 x the sum of covalent radii)`` or
        ``... at 0.400 Å < min_distance=0.5 Å``."""
        d, i, j, lim = found
        pair = f"{chemical_symbols[atoms.numbers[i]]}-{chemical_symbols[atoms.numbers[j]]}"
        if self.min_distance is not None:
            return f"atoms {i}-{j} ({pair}) at {d:.3f} Å < {self.describe()}"
        return f"atoms {i}-{j} ({pair}) at {d:.3f} Å < {lim:.3f} Å ({self.describe()})"


@dataclass(frozen=True)
class Trust:
    """The trust window an exploration is judged by (DP-GEN's trust levels).

    Attributes:
        lo: frames with uncertainty ``>= lo`` are labelling candidates (eV/Å or relative).
        hi: at ``>= hi`` the model is lost: the exploration stops there.
        relative: the window applies to the relative force deviation.
        relative_eps: regulariser of the relative deviation, eV/Å.
        energy_lo: energy deviation per atom (eV/atom) at/above which a frame is a candidate
            even where forces agree (``None``: forces alone decide).
        energy_hi: energy deviation per atom at/above which the exploration stops.
        min_distance: stop when two atoms come closer than this, Å (0: no check; ``None``:
            ``min_distance_fraction`` of the pair's covalent radii, :class:`DistanceGuard`).
        min_distance_fraction: the relative guard's fraction (used when ``min_distance`` is
            ``None``).

    Raises:
        TrustError: on construction: ``lo``/``hi`` not numbers with ``0 <= lo < hi``,
            ``relative_eps`` not finite and > 0, a bad distance guard, an energy level not finite and > 0, or ``energy_lo >= energy_hi``.
    """

    lo: float = 0.05
    hi: float = 0.5
    relative: bool = False
    relative_eps: float = 1.0
    energy_lo: float | None = None
    energy_hi: float | None = None
    min_distance: float | None = None
    min_distance_fraction: float = MIN_DISTANCE_FRACTION

    def __post_init__(self) -> None:
        try:
            TrustWindow(self.lo, self.hi, self.relative)  # numbers, 0 <= lo < hi
        except ValueError as exc:
            raise TrustError(str(exc)) from None
        if not (math.isfinite(self.relative_eps) and self.relative_eps > 0):
            raise TrustError(f"relative_eps must be finite and > 0, got {self.relative_eps!r}")
        DistanceGuard(self.min_distance, self.min_distance_fraction)  # raises if bad
        for name in ("energy_lo", "energy_hi"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise TrustError(f"{name} must be finite and > 0 eV/atom, got {value!r}")
        if None not in (self.energy_lo, self.energy_hi) and self.energy_lo >= self.energy_hi:  # type: ignore[operator]
            raise TrustError(
                f"energy_lo must be < energy_hi, got {self.energy_lo} and {self.energy_hi}"
            )

    @property
    def guard(self) -> DistanceGuard:
        """The distance guard (:class:`DistanceGuard`) of ``min_distance`` /
        ``min_distance_fraction``."""
        return DistanceGuard(self.min_distance, self.min_distance_fraction)

    def status(self, force_dev: float, energy_dev: float) -> str:
        """``accurate`` / ``candidate`` / ``failed`` of a frame from its force deviation (the
        trust window) and its energy deviation per atom (``energy_lo`` / ``energy_hi``, when
        set): the worse of the two decides. The bands are :func:`mlip_core.selection.classify`'s
        (NaN is failed); the window was checked on construction, so it is not checked again on
        every step."""
        if not force_dev < self.hi:
            status = FAILED
        else:
            status = CANDIDATE if force_dev >= self.lo else ACCURATE
        if status == FAILED or (self.energy_lo is None and self.energy_hi is None):
            return status
        if self.energy_hi is not None and not energy_dev < self.energy_hi:
            return FAILED
        if self.energy_lo is not None and not energy_dev < self.energy_lo:
            return CANDIDATE
        return status


class UncertaintyMonitor:
    """Measures, records and stops an exploration (see the module docstring).

    Args:
        trust: the window.
        record_every: keep a frame when ``step % record_every == 0``.
        unit: shown after deviations in stop reasons (``" eV/Å"``; ``""`` when relative).
    """

    def __init__(self, trust: Trust, record_every: int = 1) -> None:
        if record_every < 1:
            raise MonitorError(f"record_every must be >= 1, got {record_every}")
        self.trust = trust
        self.record_every = int(record_every)
        self.unit = "" if trust.relative else " eV/Å"  # (a model's own uncertainty: eV)
        self.frames: list[Atoms] = []
        self.trace: list[float] = []  # uncertainty of every observed state (NaN: blow-up)

    def observe(self, atoms: Atoms, step: int, **extra: Any) -> str:
        """Measure ``atoms`` (its calculator's results are computed if missing); record it when
        ``step`` is a recording step; return its status.

        Raises:
            ExplorationStop: uncertainty ``>= hi``, energy deviation ``>= energy_hi``,
                non-finite energy/forces, or atoms closer than ``min_distance`` (the frame is
                recorded as failed first).
            MonitorError: the calculator reports no ``forces_committee`` (or no
                ``energy_committee`` while energy thresholds are set).
        """
        t = self.trust
        results = atoms.calc.results  # type: ignore[union-attr]
        if "forces_committee" not in results:
            atoms.get_forces()
            results = atoms.calc.results  # type: ignore[union-attr]
        if "forces_committee" not in results:
            raise MonitorError(
                "the calculator did not report results['forces_committee'] (K, N, 3): "
                "exploration needs a committee calculator (see CONTRIBUTING.md)"
            )
        fc = np.asarray(results["forces_committee"], dtype=np.float64)
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
        if not (np.all(np.isfinite(fc)) and np.all(np.isfinite(forces))):
            self.trace.append(float("nan"))
            self.record(atoms, step, float("nan"), float("nan"), energy, failed=True, **extra)
            raise ExplorationStop(f"nan forces at step {step}")
        if not np.isfinite(energy):
            self.trace.append(float("nan"))
            self.record(atoms, step, float("nan"), float("nan"), energy, failed=True, **extra)
            raise ExplorationStop(f"nan energy at step {step}")
        if results.get("uncertainty_source") == "model":  # the model's own (a GP's sd, eV)
            if t.relative:
                raise MonitorError(
                    "a relative trust window needs a force deviation; this model reports its "
                    "own uncertainty (eV), which is judged absolutely"
                )
            dev = float(results["max_uncertainty"])
            dev_abs = max_force_deviation(fc) if len(fc) > 1 else 0.0  # the spread, eV/Å
        else:
            dev_abs = max_force_deviation(fc)
            dev = (
                max_force_deviation(fc, relative=True, eps=t.relative_eps)
                if t.relative
                else dev_abs
            )
        if "energy_committee" not in results and (
            t.energy_lo is not None or t.energy_hi is not None
        ):
            raise MonitorError(
                "energy trust thresholds need the calculator's results['energy_committee'] (K,)"
            )
        self.trace.append(dev)
        if dev >= t.hi:
            self.record(atoms, step, dev, dev_abs, energy, failed=True, **extra)
            raise ExplorationStop(f"uncertainty above hi at step {step}: {dev:.3g}{self.unit}")
        if t.energy_hi is not None:  # every step; otherwise only recorded frames need it
            dev_e = max_devi_e(results["energy_committee"], len(atoms))
            if not dev_e < t.energy_hi:
                self.record(atoms, step, dev, dev_abs, energy, failed=True, **extra)
                raise ExplorationStop(
                    f"energy deviation above energy_hi at step {step}: {dev_e:.3g} eV/atom"
                )
        self.check_distance(atoms, step, dev, dev_abs, energy, **extra)
        if step % self.record_every == 0:
            return self.record(atoms, step, dev, dev_abs, energy, failed=False, **extra)
        return t.status(dev, float("nan"))

    def check_distance(self, atoms: Atoms, step: int, *measured: float, **extra: Any) -> None:
        """Raise :class:`ExplorationStop` (after recording a failed frame) when two atoms are
        closer than the trust's :class:`DistanceGuard` allows."""
        guard = self.trust.guard
        close = guard.violation(atoms)
        if close is None:
            return
        if measured:
            self.record(atoms, step, *measured, failed=True, **extra)
        raise ExplorationStop(f"atoms too close at step {step}: {guard.message(atoms, close)}")

    def record(
        self,
        atoms: Atoms,
        step: int,
        dev: float,
        dev_abs: float,
        energy: float,
        *,
        failed: bool,
        measured: bool = True,
        **extra: Any,
    ) -> str:
        """Keep ``atoms`` as a frame and return its status. ``measured``: the calculator's
        results are this state's (not after an exception), so max_devi_e / max_devi_v are
        computed from them. Non-finite positions are not kept (nothing a DFT code could label)."""
        if not np.all(np.isfinite(atoms.positions)):
            return "failed"
        frame = atoms.copy()  # Atoms.copy() never carries the calculator
        nan = {"max_devi_e": float("nan"), "max_devi_v": float("nan")}
        devs = (
            frame_deviations(atoms, atoms.calc.results)  # type: ignore[union-attr]
            if measured and np.isfinite(dev)
            else nan
        )
        status = "failed" if failed else self.trust.status(dev, devs["max_devi_e"])
        frame.info.update(
            step=step,
            max_force_dev=dev_abs,
            max_devi_e=devs["max_devi_e"],
            max_devi_v=devs["max_devi_v"],
            uncertainty=dev,
            mlip_energy=energy,
            status=status,
            failed=failed,
            **extra,
        )
        self.frames.append(frame)
        return status

    def diagnose(
        self, atoms: Atoms, exc: Exception, step: int, **extra: Any
    ) -> ExplorationStop | None:
        """A calculator exception as a stop reason; ``None`` when it is not a blow-up (on the
        first step: a configuration problem the caller must see)."""
        self.trace.append(float("nan"))
        nan = float("nan")
        self.record(atoms, step, nan, nan, nan, failed=True, measured=False, **extra)
        if not np.all(np.isfinite(atoms.positions)):
            return ExplorationStop(f"nan positions at step {step}")
        try:
            self.check_distance(atoms, step, **extra)
        except ExplorationStop as stop:
            return stop
        if isinstance(exc, FloatingPointError):
            return ExplorationStop(f"nan forces at step {step} ({exc})")
        if step == 0:
            return None
        return ExplorationStop(f"calculator error at step {step}: {type(exc).__name__}: {exc}")
