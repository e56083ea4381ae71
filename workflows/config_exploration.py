"""The exploration and trust sections of a campaign config.

``exploration.walkers`` entries are a union discriminated by ``kind``: ``md`` (the default
when ``kind`` is absent: :class:`WalkerConfig`), ``neb`` (:class:`NEBWalkerConfig`), or the
name of any other registered explorer: a built-in (``udd``; ``lammps``, an MD walker integrated
by LAMMPS, :mod:`mlip_core.explorers_lammps`) or one under the entry-point group
``pesflow.explorers`` (:class:`ExplorerWalkerConfig`: its keys are checked against the
explorer's parameters).
Each entry gives the explorer its parameters through :meth:`explorer_params`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from .config_base import PosFloat, _Section, omit_null
from .config_on_the_fly import OnTheFlyConfig

__all__ = [
    "ENERGY_TRUST_MAX",
    "TRUST_MAX",
    "ExplorationConfig",
    "ExplorerWalkerConfig",
    "NEBWalkerConfig",
    "OnTheFlyConfig",
    "StoredStructure",
    "TrustConfig",
    "WalkerConfig",
    "WalkerEntry",
]


class WalkerConfig(_Section):
    """One MD walker (repeated ``count`` times with different seeds)."""

    union_tag: ClassVar[str] = "md"
    kind: Literal["md"] = Field(default="md", description="Explorer: md (the default).")

    temperature: PosFloat = Field(le=10000, description="Thermostat temperature, K (<= 10 000).")
    temperature_end: PosFloat | None = Field(
        default=None,
        le=10000,
        json_schema_extra=omit_null,
        description="Thermostat temperature at the last step, K: the target goes linearly "
        "from 'temperature' to this over the run (a heating or quenching ramp; default: "
        "constant). Frames keep the target they were taken at.",
    )
    pressure: float = Field(
        default=0.0, ge=-100, le=1000, description="External pressure (npt only), GPa."
    )
    pressure_end: float | None = Field(
        default=None,
        ge=-100,
        le=1000,
        json_schema_extra=omit_null,
        description="Pressure at the last step (npt only), GPa, ramped linearly from 'pressure'.",
    )
    ensemble: Literal["nvt", "npt", "nve"] = Field(default="nvt", description="Ensemble.")
    steps: int = Field(default=500, ge=1, description="MD steps.")
    timestep: PosFloat = Field(default=2.0, le=20, description="Time step, fs.")
    record_every: int = Field(default=10, ge=1, description="Keep a frame every N steps.")
    friction: PosFloat = Field(default=0.01, description="Langevin friction, 1/fs.")
    count: int = Field(default=1, ge=1, description="Walkers with this setting (seeds differ).")
    start: int | None = Field(
        default=None,
        ge=0,
        description="Index of the structure source (structures[i]) to start from; copies "
        "cycle over its frames (default: every initial structure round-robin).",
    )
    start_from: Literal["initial", "labelled", "explored"] = Field(
        default="initial",
        description="Where each copy starts: an initial structure ('start'), a frame labelled "
        "in an earlier iteration, or a frame the previous iteration's walkers offered. "
        "Without such frames yet (iteration 0) it starts from an initial structure and says so.",
    )
    start_rule: Literal["random", "uncertain"] = Field(
        default="random",
        description="Which frame, with start_from labelled/explored: 'random' (seeded by the "
        "campaign seed, the iteration and the copy) or 'uncertain' (copy k takes the frame "
        "with the k-th highest committee deviation when it was explored).",
    )
    regime: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.()+-]*$",
        description="Regime of this walker's frames (default: its start structure's).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> WalkerConfig:
        if self.record_every > self.steps:
            raise ValueError(
                f"record_every={self.record_every} > steps={self.steps}: the walker would keep "
                f"only its start frame; lower record_every or raise steps"
            )
        if self.pressure != 0 and self.ensemble != "npt":
            raise ValueError(
                f"pressure={self.pressure} GPa on an {self.ensemble} walker: only npt walkers "
                "feel a pressure; set ensemble: npt or drop pressure"
            )
        if self.pressure_end is not None and self.ensemble != "npt":
            raise ValueError(
                f"pressure_end={self.pressure_end} GPa on an {self.ensemble} walker: only npt "
                "walkers feel a pressure; set ensemble: npt or drop pressure_end"
            )
        if self.temperature_end is not None and self.ensemble == "nve":
            raise ValueError(
                "temperature_end on an nve walker: it has no thermostat to ramp; use nvt or npt"
            )
        if self.start_rule != "random" and self.start_from == "initial":
            raise ValueError(
                f"start_rule={self.start_rule!r} chooses among stored frames: it needs "
                "start_from: labelled or explored"
            )
        if self.start is not None and self.start_from != "initial":
            raise ValueError(
                f"start={self.start} names an initial structure but start_from="
                f"{self.start_from!r}: drop one"
            )
        return self

    def stored_ids(self) -> list[int]:
        """Stored structures used (none: MD starts from an initial structure)."""
        return []

    def explorer_params(self, start: int, n_initial: int = 0) -> dict[str, Any]:
        """Parameters of :class:`mlip_core.explorers.MDParams` (``start``: the structure index
        this copy of the walker starts from)."""
        return {
            "start": start,
            "ensemble": self.ensemble,
            "temperature": self.temperature,
            "pressure": self.pressure,
            "timestep": self.timestep,
            "steps": self.steps,
            "record_every": self.record_every,
            "friction": self.friction,
            "temperature_end": self.temperature_end,
            "pressure_end": self.pressure_end,
        }


class StoredStructure(_Section):
    """A structure already in the campaign's database, by id."""

    union_tag: ClassVar[str] = "stored"
    structure_id: int = Field(ge=1, description="Database id of the structure.")


def _endpoint_kind(value: Any) -> str:
    return "stored" if isinstance(value, dict | StoredStructure) else "int"


Endpoint = Annotated[
    Annotated[int, Tag("int"), Field(ge=0)] | Annotated[StoredStructure, Tag("stored")],
    Discriminator(_endpoint_kind),
]
"""A band's end: an index into the campaign's structures, or ``{structure_id: N}``."""


class NEBWalkerConfig(_Section):
    """A nudged elastic band between two of the campaign's structures, relaxed with the
    committee; its images are judged by the trust window (:mod:`mlip_core.neb`)."""

    union_tag: ClassVar[str] = "neb"
    kind: Literal["neb"] = Field(description="Explorer: neb.")
    initial: Endpoint = Field(
        description="Initial state: an index into the campaign's structures, or "
        "{structure_id: N}, a structure of this campaign with a done label (e.g. a relaxed "
        "minimum labelled in an earlier iteration)."
    )
    final: Endpoint = Field(description="Final state (same atoms, same order).")
    n_images: int = Field(default=5, ge=1, le=30, description="Interior images.")
    steps: int = Field(default=100, ge=0, le=100000, description="Optimizer steps at most.")
    fmax: PosFloat = Field(default=0.05, description="Converged below this NEB force, eV/Å.")
    record_every: int = Field(default=10, ge=1, description="Judge images every N steps.")
    climb: bool = Field(default=True, description="Climbing image.")
    spring: PosFloat = Field(default=0.1, description="Spring constant, eV/Å^2.")
    interpolation: Literal["idpp", "linear"] = Field(default="idpp", description="Initial path.")
    max_atom_move: PosFloat = Field(
        default=4.0, le=50, description="Largest move of one atom between the ends, Å."
    )
    count: Literal[1] = Field(default=1, description="A band is deterministic: one copy.")
    regime: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.()+-]*$",
        description="Regime of this walker's frames (default: its start structure's).",
    )

    def stored_ids(self) -> list[int]:
        """Database ids of the stored structures this band starts from (in order)."""
        return [
            e.structure_id for e in (self.initial, self.final) if isinstance(e, StoredStructure)
        ]

    def explorer_params(self, start: int, n_initial: int = 0) -> dict[str, Any]:
        """Parameters of :class:`mlip_core.neb.NEBParams`; a stored endpoint becomes index
        ``n_initial + k`` (the k-th of :meth:`stored_ids`, after the initial structures)."""
        ids = self.stored_ids()

        def index(end: int | StoredStructure) -> int:
            return end if isinstance(end, int) else n_initial + ids.index(end.structure_id)

        out = self.model_dump(exclude={"kind", "count", "initial", "final", "regime"})
        return {**out, "initial": index(self.initial), "final": index(self.final)}

    def explorer_starts(self, n_structures: int) -> list[int]:
        """The structure indices used; ``ValueError`` when one does not exist."""
        from mlip_core.explorers import get_explorer, make_params

        explorer = get_explorer(self.kind)
        pool = n_structures + len(self.stored_ids())
        return explorer.starts(make_params(explorer, self.explorer_params(0, n_structures)), pool)


class ExplorerWalkerConfig(_Section):
    """An explorer registered under the entry-point group ``pesflow.explorers``: every key
    but ``kind`` and ``count`` is one of its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    union_tag: ClassVar[str] = "registered"
    kind: str = Field(description="A registered explorer's name.")
    count: int = Field(default=1, ge=1, description="Copies (seeds differ).")
    regime: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.()+-]*$",
        description="Regime of this walker's frames (default: its start structure's).",
    )

    @model_validator(mode="after")
    def _known(self) -> ExplorerWalkerConfig:
        from mlip_core.explorers import get_explorer, make_params

        make_params(get_explorer(self.kind), self.explorer_params(0))
        return self

    def stored_ids(self) -> list[int]:
        """Stored structures used (none: a registered explorer uses the initial ones)."""
        return []

    def explorer_params(self, start: int, n_initial: int = 0) -> dict[str, Any]:
        """The entry's parameters (its keys other than ``kind`` and ``count``)."""
        return dict(self.model_extra or {})

    def explorer_starts(self, n_structures: int) -> list[int]:
        """The structure indices used; ``ValueError`` when one does not exist."""
        from mlip_core.explorers import get_explorer, make_params

        explorer = get_explorer(self.kind)
        return explorer.starts(make_params(explorer, self.explorer_params(0)), n_structures)


def _walker_kind(value: Any) -> str:
    kind = value.get("kind", "md") if isinstance(value, dict) else getattr(value, "kind", "md")
    return kind if kind in ("md", "neb") else "registered"


WalkerEntry = Annotated[
    Annotated[WalkerConfig, Tag("md")]
    | Annotated[NEBWalkerConfig, Tag("neb")]
    | Annotated[ExplorerWalkerConfig, Tag("registered")],
    Discriminator(_walker_kind),
]
"""One ``exploration.walkers`` entry (see the module docstring)."""


class ExplorationConfig(_Section):
    """The explorations of every iteration: MD walkers, bands, registered explorers."""

    walkers: list[WalkerEntry] = Field(min_length=1, description="Explorations.")
    mode: Literal["batch", "on-the-fly"] = Field(
        default="batch",
        description="batch: every iteration runs whole walkers, then selects and labels; "
        "on-the-fly: one long MD per walker that pauses to label each uncertain step.",
    )
    on_the_fly: OnTheFlyConfig = Field(
        default_factory=OnTheFlyConfig, description="Settings of the on-the-fly mode."
    )
    min_distance: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        json_schema_extra=omit_null,
        description="Stop a walker when two atoms come closer than this, Å, for every pair "
        "(0: no check; the committee calculator applies the same rule). Default: the "
        "relative rule of min_distance_fraction.",
    )
    min_distance_fraction: float = Field(
        default=0.6,
        gt=0,
        le=0.9,
        description="Without min_distance: stop when two atoms come closer than this "
        "fraction of the sum of their covalent radii (ase.data.covalent_radii; Cu-Cu 0.6 x "
        "2.64 = 1.58 Å, below the 1.86 Å EMT Cu reaches at 2500 K, above fused pairs).",
    )

    @model_validator(mode="after")
    def _on_the_fly_md(self) -> ExplorationConfig:
        if self.mode == "on-the-fly":
            kinds = sorted({w.kind for w in self.walkers if w.kind != "md"})
            if kinds:
                raise ValueError(f"on-the-fly mode runs md walkers only, not {', '.join(kinds)}")
        return self


TRUST_MAX = 10.0
"""eV/Å (or relative): a trust threshold above this is a unit slip (meV) or a lost model."""

ENERGY_TRUST_MAX = 1.0
"""eV/atom: an energy-deviation threshold above this is a unit slip (meV) or a lost model."""


class TrustConfig(_Section):
    """Trust window on the committee's max atomic force deviation (max_devi_f) and, when set,
    on its energy deviation per atom (max_devi_e)."""

    # maximum TRUST_MAX: stated in the schema, enforced by _order with a unit hint
    lo: float = Field(
        default=0.05,
        ge=0,
        allow_inf_nan=False,
        json_schema_extra={"maximum": TRUST_MAX},
        description="Below: accurate (eV/Å or relative).",
    )
    hi: PosFloat = Field(
        default=0.5,
        allow_inf_nan=False,
        json_schema_extra={"maximum": TRUST_MAX},
        description="At/above: model lost, walker cut.",
    )
    relative: bool = Field(default=False, description="Thresholds on the relative deviation.")
    calibrated: bool = Field(
        default=False,
        description="lo and hi are tolerances on the calibrated max force error (eV/Å): each "
        "walker's window on the deviation is lo/s and hi/s, with s the exploring committee's "
        "90 % bound for its regime (workflows.calibrate); the raw window until a bound exists.",
    )
    relative_eps: PosFloat = Field(
        default=1.0,
        le=1000,
        description="Regulariser of the relative deviation sigma_i / (|<F_i>| + eps), eV/Å.",
    )
    energy_lo: PosFloat | None = Field(
        default=None,
        json_schema_extra={"maximum": ENERGY_TRUST_MAX},
        description="Energy deviation per atom (max_devi_e, eV/atom) at/above which a frame is "
        "a candidate even where the forces agree (default: forces alone decide).",
    )
    energy_hi: PosFloat | None = Field(
        default=None,
        json_schema_extra={"maximum": ENERGY_TRUST_MAX},
        description="Energy deviation per atom (eV/atom) at/above which the walker stops.",
    )

    @model_validator(mode="after")
    def _order(self) -> TrustConfig:
        for key in ("lo", "hi"):
            value = getattr(self, key)
            if value > TRUST_MAX:
                raise ValueError(
                    f"{key}={value:g}: a force-deviation window above {TRUST_MAX:g} "
                    f"{'(relative)' if self.relative else 'eV/Å'} trusts a lost model; "
                    f"given in meV/Å? ({value / 1000:g} eV/Å)"
                )
        if self.lo >= self.hi:
            raise ValueError(f"lo must be < hi (got lo={self.lo}, hi={self.hi})")
        if self.calibrated and self.relative:
            raise ValueError(
                "calibrated: the bound calibrates the absolute deviation (eV/Å); "
                "set relative: false"
            )
        for key in ("energy_lo", "energy_hi"):
            value = getattr(self, key)
            if value is not None and value > ENERGY_TRUST_MAX:
                raise ValueError(
                    f"{key}={value:g} eV/atom: an energy deviation above {ENERGY_TRUST_MAX:g} "
                    f"eV/atom trusts a lost model; given in meV/atom? ({value / 1000:g} eV/atom)"
                )
        if None not in (self.energy_lo, self.energy_hi) and self.energy_lo >= self.energy_hi:  # type: ignore[operator]
            raise ValueError(
                f"energy_lo must be < energy_hi (got {self.energy_lo} and {self.energy_hi})"
            )
        return self
