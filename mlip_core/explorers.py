"""Explorers: how the committee generates frames for the trust window to judge.

An extension point: the :class:`Explorer` protocol and :data:`EXPLORERS`, a
:class:`~mlip_core.plugins.Registry` of the built-ins (``md``: an MD walker,
:func:`mlip_core.md.run_walker`; ``neb``: a nudged elastic band relaxed with the committee,
:mod:`mlip_core.neb`; ``udd``: uncertainty-driven MD, :mod:`mlip_core.udd`; ``lammps``: an MD
walker integrated by LAMMPS, :mod:`mlip_core.explorers_lammps`) and of
out-of-tree explorers declared under the entry-point group
``pesflow.explorers``. A campaign's ``exploration.walkers`` entries name one by ``kind``; the
entry's other keys are the explorer's parameters (its ``params_cls`` dataclass). Any ASE
dynamics or optimizer can be judged by :class:`mlip_core.monitor.UncertaintyMonitor`. Every
explorer must pass :func:`mlip_core.contract.check_explorer`.

To add one: a class with ``name``, ``params_cls``, ``starts`` and ``explore`` (below), then::

    [project.entry-points."pesflow.explorers"]
    my-explorer = "my_package.explore:MyExplorer"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ase import Atoms
from ase.calculators.calculator import Calculator

from .monitor import Trust
from .plugins import Registry, dataclass_options

__all__ = ["EXPLORERS", "Explorer", "MDExplorer", "MDParams", "get_explorer", "make_params"]


@runtime_checkable
class Explorer(Protocol):
    """Generates frames with their committee uncertainty.

    ``starts(params, n_structures)`` gives the indices of the campaign's initial structures the
    exploration uses (in order); ``explore(structures, calculator, trust, params, seed)`` gets
    exactly those and returns a :class:`mlip_core.md.WalkerResult`-like object: ``frames`` (calc-free
    ``Atoms`` whose ``info`` holds ``step``, ``uncertainty``, ``max_force_dev`` eV/Å,
    ``status`` accurate/candidate/failed, ``failed``), ``stopped_early``, ``stop_reason``,
    ``wall_time_s``. It never raises for a blow-up of the model (that ends it with a
    ``stop_reason``); it raises for a configuration it cannot run. The same inputs and seed give
    the same frames. ``origin_keys`` name the frame ``info`` keys worth keeping with a label's
    provenance (e.g. ``("image",)``); ``temperature(params)`` is the exploration's temperature
    in K or ``None``.
    """

    name: str
    params_cls: type
    origin_keys: tuple[str, ...]

    def starts(self, params: Any, n_structures: int) -> list[int]:
        """Indices of the initial structures used."""
        ...

    def temperature(self, params: Any) -> float | None:
        """Temperature (K) of the exploration, or ``None``."""
        ...

    def explore(
        self,
        structures: Sequence[Atoms],
        calculator: Calculator,
        trust: Trust,
        params: Any,
        seed: int,
    ) -> Any:
        """Run the exploration; returns a result with ``frames`` (see above)."""
        ...


def make_params(explorer: Explorer, values: Mapping[str, Any]) -> Any:
    """``explorer.params_cls(**values)``; ``ValueError`` names an unknown key (closest match)."""
    return dataclass_options(explorer.params_cls, values, f"explorer {explorer.name!r}")


@dataclass(frozen=True)
class MDParams:
    """One MD walker (units as in :class:`mlip_core.md.WalkerSpec`): ensemble nvt/npt/nve,
    temperature K, pressure GPa, timestep fs, steps, record_every, friction 1/fs, start (index
    of the initial structure), temperature_end K / pressure_end GPa (linear ramps over the run;
    ``None``: constant)."""

    start: int = 0
    ensemble: str = "nvt"
    temperature: float = 300.0
    pressure: float = 0.0
    timestep: float = 2.0
    steps: int = 500
    record_every: int = 10
    friction: float = 0.01
    temperature_end: float | None = None
    pressure_end: float | None = None


@dataclass
class MDExplorer:
    """Committee-driven MD from one structure (:func:`mlip_core.md.run_walker`)."""

    name: str = "md"
    params_cls: type = MDParams
    origin_keys: tuple[str, ...] = ()

    def starts(self, params: MDParams, n_structures: int) -> list[int]:
        return [params.start]

    def temperature(self, params: MDParams) -> float | None:
        return float(params.temperature)

    def spec(self, trust: Trust, params: MDParams, seed: int) -> Any:
        """The :class:`mlip_core.md.WalkerSpec` of ``params`` under ``trust``."""
        from .md import WalkerSpec

        return WalkerSpec(
            ensemble=params.ensemble,
            temperature_K=params.temperature,
            pressure_GPa=params.pressure,
            timestep_fs=params.timestep,
            n_steps=params.steps,
            record_every=params.record_every,
            friction=params.friction,
            seed=seed,
            trust=trust,
            temperature_end_K=params.temperature_end,
            pressure_end_GPa=params.pressure_end,
        )

    def explore(
        self,
        structures: Sequence[Atoms],
        calculator: Calculator,
        trust: Trust,
        params: MDParams,
        seed: int,
    ) -> Any:
        from .md import run_walker

        return run_walker(structures[0], calculator, self.spec(trust, params, seed))


EXPLORERS: Registry[Explorer] = Registry(
    "explorer",
    "pesflow.explorers",
    {
        "md": "mlip_core.explorers:MDExplorer",
        "neb": "mlip_core.neb:NEBExplorer",
        "udd": "mlip_core.udd:UDDExplorer",
        "lammps": "mlip_core.explorers_lammps:LammpsExplorer",
    },
    Explorer,
)


def get_explorer(name: str) -> Explorer:
    """The explorer called ``name``; :class:`~mlip_core.plugins.PluginError` if unknown."""
    return EXPLORERS.get(name)
