"""The ``neb`` explorer: a nudged elastic band relaxed with the committee.

Rare events (a vacancy hop, a diffusion step, a reaction) are where MD at the sampled
temperatures never goes and where a potential is most often wrong: the saddle region. The
explorer interpolates ``n_images`` images between two endpoint structures (IDPP by default,
Smidstrup et al., J. Chem. Phys. 140, 214106 (2014)), relaxes the band with the committee's
mean forces (ASE's :class:`ase.mep.NEB`, climbing image by default, Henkelman et al.,
J. Chem. Phys. 113, 9901 (2000); FIRE optimizer), and every ``record_every`` optimizer steps
(and at the end) judges each interior image with :class:`mlip_core.monitor.UncertaintyMonitor`:
images in the trust window's candidate range are offered for labelling like MD frames, and an
image at or above ``hi`` stops the band (the model is lost there; that image is recorded as
failed). Frames carry ``info["image"]`` (1..n_images) and ``info["reaction_coordinate"]``
(0 at the initial, 1 at the final endpoint: cumulative image-to-image distance). The endpoints
are used as given (they are usually labelled structures) and are not judged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .md import WalkerResult
from .monitor import ExplorationStop, Trust, UncertaintyMonitor

__all__ = ["NEBExplorer", "NEBParams", "endpoint_problem"]


@dataclass(frozen=True)
class NEBParams:
    """Parameters of one band.

    Attributes:
        initial: index of the initial-state structure among the campaign's structures.
        final: index of the final-state structure (same atoms, same order).
        n_images: interior images.
        steps: FIRE steps at most.
        fmax: stop when the largest NEB force is below this, eV/Å.
        record_every: judge the images every this many optimizer steps (and at the end).
        climb: climbing image (the highest image climbs to the saddle).
        spring: spring constant, eV/Å^2.
        interpolation: ``idpp`` or ``linear``.
        max_atom_move: largest displacement of one atom between the endpoints (minimum image),
            Å: more means the two structures do not list the same atoms in the same order.
    """

    initial: int = 0
    final: int = 1
    n_images: int = 5
    steps: int = 100
    fmax: float = 0.05
    record_every: int = 10
    climb: bool = True
    spring: float = 0.1
    interpolation: str = "idpp"
    max_atom_move: float = 4.0

    def __post_init__(self) -> None:
        if self.initial == self.final:
            raise ValueError(f"initial and final are the same structure ({self.initial})")
        if min(self.initial, self.final) < 0:
            raise ValueError("initial and final must be structure indices >= 0")
        if self.n_images < 1 or self.steps < 0 or self.record_every < 1:
            raise ValueError("n_images >= 1, steps >= 0 and record_every >= 1 are required")
        if not (self.fmax > 0 and self.spring > 0):
            raise ValueError(f"fmax and spring must be > 0 (got {self.fmax}, {self.spring})")
        if self.interpolation not in ("idpp", "linear"):
            raise ValueError(f"interpolation must be idpp or linear, got {self.interpolation!r}")


def endpoint_problem(initial: Atoms, final: Atoms, max_atom_move: float = 4.0) -> str | None:
    """Why ``initial`` and ``final`` cannot be the ends of one band (same atoms in the same
    order, one cell, no atom moving more than ``max_atom_move`` Å between them, minimum
    image), or ``None``."""
    from ase.geometry import find_mic

    if len(initial) != len(final) or not np.array_equal(initial.numbers, final.numbers):
        return (
            f"NEB endpoints must have the same atoms in the same order ({initial.get_chemical_formula()}, "
            f"{len(initial)} atoms vs {final.get_chemical_formula()}, {len(final)} atoms)"
        )
    if not np.allclose(initial.cell.array, final.cell.array, atol=1e-6):
        return "NEB endpoints must share one cell"
    _, lengths = find_mic(final.positions - initial.positions, initial.cell, initial.pbc)
    k = int(np.argmax(lengths))
    if lengths[k] > max_atom_move:
        return (
            f"atom {k} moves {lengths[k]:.2f} Å between the NEB endpoints (> max_atom_move="
            f"{max_atom_move:g} Å): are the atoms listed in the same order?"
        )
    return None


def reaction_coordinates(images: Sequence[Atoms]) -> np.ndarray:
    """Cumulative image-to-image distance (minimum image), normalised to 0..1, shape
    ``(len(images),)``."""
    from ase.geometry import find_mic

    steps = [0.0]
    for a, b in itertools.pairwise(images):
        d, _ = find_mic(b.positions - a.positions, a.cell, a.pbc)
        steps.append(float(np.linalg.norm(d)))
    s = np.cumsum(steps)
    return s / s[-1] if s[-1] > 0 else s


@dataclass
class NEBExplorer:
    """Nudged elastic band with the committee (see the module docstring)."""

    name: str = "neb"
    params_cls: type = NEBParams
    origin_keys: tuple[str, ...] = field(default=("image", "reaction_coordinate"))

    def starts(self, params: NEBParams, n_structures: int) -> list[int]:
        for key in ("initial", "final"):
            if getattr(params, key) >= n_structures:
                raise ValueError(
                    f"{key}={getattr(params, key)} but only {n_structures} structure(s) exist"
                )
        return [params.initial, params.final]

    def temperature(self, params: NEBParams) -> float | None:
        return None

    def explore(
        self,
        structures: Sequence[Atoms],
        calculator: Calculator,
        trust: Trust,
        params: NEBParams,
        seed: int,
    ) -> WalkerResult:
        """Relax the band; returns the judged interior images as frames.

        Raises:
            ValueError: endpoints that cannot end one band (:func:`endpoint_problem`).
        """
        from ase.mep import NEB
        from ase.optimize import FIRE

        t0 = time.perf_counter()
        initial, final = structures
        problem = endpoint_problem(initial, final, params.max_atom_move)
        if problem is not None:
            raise ValueError(problem)
        images = [initial.copy() for _ in range(params.n_images + 1)] + [final.copy()]
        for im in images:
            im.calc = calculator
        band = NEB(
            images,
            k=params.spring,
            climb=params.climb,
            method="improvedtangent",
            allow_shared_calculator=True,
        )
        band.interpolate(method=params.interpolation, mic=True)
        monitor = UncertaintyMonitor(trust, record_every=1)
        opt = FIRE(band, logfile=None)

        def judge(step: int) -> None:
            rc = reaction_coordinates(images)
            for i in range(1, len(images) - 1):
                images[i].calc = calculator  # shared: recomputed for this image's positions
                monitor.observe(images[i], step, image=i, reaction_coordinate=float(rc[i]))

        stop_reason: str | None = None
        converged = False
        step = 0
        try:
            try:
                for converged in opt.irun(fmax=params.fmax, steps=params.steps):
                    step = int(opt.nsteps)
                    if step % params.record_every == 0 and not converged:
                        judge(step)
                judge(step)
            except ExplorationStop:
                raise
            except Exception as exc:  # a blow-up of the model inside the band's forces
                stop = monitor.diagnose(images[len(images) // 2], exc, step)
                if stop is None:
                    raise
                raise stop from exc
        except ExplorationStop as stop:
            stop_reason = stop.reason
        finally:
            for im in images:
                im.calc = None
        frames = monitor.frames
        info = [f.info for f in frames]
        energies = np.asarray([i["mlip_energy"] for i in info], dtype=np.float64)
        return WalkerResult(
            spec=trust,  # type: ignore[arg-type]  # .status is all a result needs
            frames=frames,
            deviations=np.asarray([i["uncertainty"] for i in info], dtype=np.float64),
            energies=energies,
            steps=np.asarray([i["step"] for i in info], dtype=np.int64),
            stopped_early=stop_reason is not None,
            stop_step=step if stop_reason is not None else None,
            stop_reason=stop_reason,
            n_steps_done=step,
            step_deviations=np.asarray(monitor.trace, dtype=np.float64),
            wall_time_s=time.perf_counter() - t0,
            energy_deviations=np.asarray([i["max_devi_e"] for i in info], dtype=np.float64),
            extra={"converged": bool(converged), "n_images": params.n_images},
        )
