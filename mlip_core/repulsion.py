"""A physics baseline under the learned energy: the ZBL screened nuclear repulsion.

A learned potential only knows the distances its training data visited; below ~2 Å (hot MD,
cascades, a bad start) its repulsion is whatever the network extrapolates, often far too soft.
The cure used by MACE (``ZBLBasis``), ACE (core repulsion) and DeePMD (``use_srtab``): a fixed
pair repulsion added to the learned energy, forces and stress, the learned part trained on the
residual (:func:`mlip_core.backends.train_with_repulsion`).

The ZBL universal screened nuclear repulsion (J. F. Ziegler, J. P. Biersack, U. Littmark, *The
Stopping and Range of Ions in Solids*, Pergamon 1985, eq. 2-59)::

    E_ij(r) = Z_i Z_j e^2 / (4 pi eps0 r) * phi(r / a),   a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)
    phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x}
             + 0.02817 e^{-0.20162 x},                       e^2 / (4 pi eps0) = 14.399645 eV Å

times a switch per element pair, ``S(r) = 1 - 10 t^3 + 15 t^4 - 6 t^5`` with
``t = (r - r_in) / (r_out - r_in)`` clipped to [0, 1]: 1 below ``r_in``, 0 above ``r_out``, its
first and second derivatives vanish at both ends (C2). ``E' < 0`` and ``S' <= 0``, so ``E S``
falls monotonically with ``r``. Default radii from ASE's covalent radii (Cordero et al. 2008):
``r_in = 0.5 (rcov_i + rcov_j)``, ``r_out = 0.75 (rcov_i + rcov_j)`` (Cu-Cu: 1.32 -> 1.98 Å,
below the nearest-neighbour shell at 2.55 Å).

Energies are in eV, distances in Å, forces in eV/Å, stress (the strain derivative / V) in
eV/Å^3; everything is computed in float64 whatever the learned model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ase.data import atomic_numbers, chemical_symbols, covalent_radii
from torch import nn

from mlip_core.committee import CommitteeOutput
from mlip_core.functional import edge_forces, edge_stress, edge_vectors, zbl_edges, zbl_pair
from mlip_core.neighbors import AtomicGraph

__all__ = [
    "COULOMB",
    "WithRepulsion",
    "ZBLRepulsion",
    "pair_key",
    "unwrap",
    "with_repulsion",
    "zbl_energy",
]

COULOMB = 14.399645
"""e^2 / (4 pi eps0) in eV Å."""
SCREENING = 0.46850
"""ZBL universal screening length prefactor, Å."""
PHI_C = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_B = (3.19980, 0.94229, 0.40290, 0.20162)
ZBL_CONSTANTS = (SCREENING, COULOMB, *PHI_C, *PHI_B)
"""The constants as :func:`mlip_core.functional.zbl_pair` takes them."""


def zbl_energy(z1: int, z2: int, r: float) -> float:
    """Unswitched ZBL energy (eV) of atoms ``z1``, ``z2`` at distance ``r`` (Å), in plain Python
    (the reference the torch module is tested against)."""
    a = SCREENING / (z1**0.23 + z2**0.23)
    phi = sum(c * math.exp(-b * r / a) for c, b in zip(PHI_C, PHI_B, strict=True))
    return z1 * z2 * COULOMB / r * phi


def _symbol_z(symbol: str, key: str) -> int:
    z = atomic_numbers.get(symbol.strip())
    if z is None or z == 0:
        raise ValueError(f"{key}: unknown element {symbol.strip()!r}")
    return z


def pair_key(pair: str | tuple[int, int]) -> tuple[int, int]:
    """``(Z_small, Z_large)`` of a pair given as ``"Cu-Au"`` or ``(29, 79)``; ``ValueError``
    (one line, naming the pair) for a malformed name or an unknown element."""
    if isinstance(pair, str):
        parts = pair.split("-")
        if len(parts) != 2:
            raise ValueError(f"pair {pair!r}: give two element symbols joined by '-', e.g. Cu-Au")
        z1, z2 = (_symbol_z(p, f"pair {pair!r}") for p in parts)
    else:
        z1, z2 = (int(z) for z in pair)
        for z in (z1, z2):
            if not 0 < z < len(chemical_symbols):
                raise ValueError(f"pair {pair!r}: no element with atomic number {z}")
    return (min(z1, z2), max(z1, z2))


def _pair_name(z1: int, z2: int) -> str:
    return f"{chemical_symbols[z1]}-{chemical_symbols[z2]}"


class ZBLRepulsion(nn.Module):
    """The switched ZBL repulsion of a model's species (see module docstring).

    Args:
        species: atomic numbers in the learned model's species order (species index -> Z).
        pairs: radii ``(r_in, r_out)`` in Å per element pair (``"Cu-Au"`` or ``(29, 79)``)
            replacing the defaults; pairs of elements not in ``species`` are kept (in
            :meth:`to_dict`) but never met.
        inner_scale, outer_scale: defaults ``r_in = inner_scale (rcov_i + rcov_j)``,
            ``r_out = outer_scale (rcov_i + rcov_j)`` (ASE covalent radii).
        cutoff: the learned model's cutoff (Å); an outer radius above it is refused.

    Raises:
        ValueError: a non-positive radius or scale, ``r_in >= r_out``, an outer radius above
            ``cutoff``, an unknown element or malformed pair name (one line, naming the pair).
    """

    def __init__(
        self,
        species: Sequence[int],
        *,
        pairs: Mapping[Any, Sequence[float]] | None = None,
        inner_scale: float = 0.5,
        outer_scale: float = 0.75,
        cutoff: float | None = None,
    ) -> None:
        super().__init__()
        if not species:
            raise ValueError("the repulsion needs at least one species")
        if not 0 < inner_scale < outer_scale:
            raise ValueError(
                f"repulsion scales must satisfy 0 < inner_scale < outer_scale, got "
                f"{inner_scale} and {outer_scale}"
            )
        self._species = [int(z) for z in species]
        self.inner_scale, self.outer_scale = float(inner_scale), float(outer_scale)
        self.pairs: dict[tuple[int, int], tuple[float, float]] = {}
        for name, radii in (pairs or {}).items():
            key = pair_key(name)
            if key in self.pairs:
                raise ValueError(f"pair {name!r} given twice (as {_pair_name(*key)})")
            r_in, r_out = (float(r) for r in radii)
            self.pairs[key] = (r_in, r_out)
        s = len(self._species)
        r_in_t = torch.empty(s, s, dtype=torch.float64)
        r_out_t = torch.empty(s, s, dtype=torch.float64)
        for a, za in enumerate(self._species):
            for b, zb in enumerate(self._species):
                r_in_t[a, b], r_out_t[a, b] = self.radii(za, zb)
        for (z1, z2), (r_in, r_out) in self.pairs.items():
            _check_radii(_pair_name(z1, z2), r_in, r_out, cutoff)
        for a, za in enumerate(self._species):  # defaults of the species too
            for zb in self._species[a:]:
                _check_radii(_pair_name(*pair_key((za, zb))), *self.radii(za, zb), cutoff)
        z = torch.tensor(self._species, dtype=torch.float64)
        self.register_buffer("z", z)
        self.register_buffer("r_in", r_in_t)
        self.register_buffer("r_out", r_out_t)

    @property
    def species(self) -> list[int]:
        """Atomic numbers, in species-index order."""
        return list(self._species)

    @property
    def max_radius(self) -> float:
        """The largest outer radius among the species pairs, Å (nothing acts beyond it)."""
        return float(self.r_out.max())

    def radii(self, z1: int, z2: int) -> tuple[float, float]:
        """``(r_in, r_out)`` in Å of the pair ``z1``, ``z2``: given, or the covalent default."""
        key = pair_key((z1, z2))
        if key in self.pairs:
            return self.pairs[key]
        rsum = float(covalent_radii[z1] + covalent_radii[z2])
        return (self.inner_scale * rsum, self.outer_scale * rsum)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (for a checkpoint): kind, species, scales and the radii of every
        pair given or met (so a checkpoint does not depend on ASE's radii table)."""
        pairs = dict(self.pairs)
        for a, za in enumerate(self._species):
            for zb in self._species[a:]:
                pairs.setdefault(pair_key((za, zb)), self.radii(za, zb))
        return {
            "kind": "zbl",
            "species": list(self._species),
            "inner_scale": self.inner_scale,
            "outer_scale": self.outer_scale,
            "pairs": {_pair_name(*k): [v[0], v[1]] for k, v in sorted(pairs.items())},
        }

    def for_species(self, species: Sequence[int]) -> ZBLRepulsion:
        """The same repulsion (scales, given radii) for another species list or order."""
        if [int(z) for z in species] == self._species:
            return self
        return ZBLRepulsion.from_dict({**self.to_dict(), "species": list(species)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], cutoff: float | None = None) -> ZBLRepulsion:
        """The repulsion :meth:`to_dict` describes; ``ValueError`` for another ``kind``."""
        if data.get("kind") != "zbl":
            raise ValueError(f"unknown repulsion kind {data.get('kind')!r} (known: zbl)")
        return cls(
            data["species"],
            pairs=data.get("pairs"),
            inner_scale=data.get("inner_scale", 0.5),
            outer_scale=data.get("outer_scale", 0.75),
            cutoff=cutoff,
        )

    def pair_energy(self, dist: torch.Tensor, si: torch.Tensor, sj: torch.Tensor) -> tuple:
        """Switched pair energies ``E S`` (eV) and ``d(E S)/dr`` (eV/Å) of distances ``dist``
        (any shape, float64, > 0) between species indices ``si`` and ``sj`` (same shape)."""
        z, r_in, r_out = self.z, self.r_in[si, sj], self.r_out[si, sj]
        return zbl_pair(dist, z[si], z[sj], r_in, r_out, ZBL_CONSTANTS)

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """Energy ``(1, B)``, forces ``(1, N, 3)`` and stress ``(1, B, 3, 3)`` of a batch, float64.

        The graph is the learned model's (cutoff >= every outer radius). Its neighbor list is
        full (each pair as i->j and j->i), so each directed edge carries half the pair energy;
        forces and the virial stress come from the per-edge ``dE/dr_ij`` exactly as in
        :meth:`mlip_core.model.CommitteePotential.predict` (analytic derivatives: the baseline
        has no parameters, ``create_graph`` changes nothing).

        Raises:
            ValueError: stress requested for a non-periodic structure.
        """
        f64, b = torch.float64, graph.n_structures
        if compute_stress and bool((graph.volume <= 0).any()):
            raise ValueError("stress requested for a non-periodic structure (no volume)")
        vectors = edge_vectors(graph.positions.to(f64), graph.neighbors, graph.shifts.to(f64))
        tables = [self.z, self.r_in, self.r_out]
        e_edge, de_dr = zbl_edges(
            graph.species, graph.neighbors, graph.mask, vectors, tables, ZBL_CONSTANTS
        )
        energy = torch.zeros(b, dtype=f64, device=vectors.device).index_add(
            0, graph.batch, e_edge.sum(1)
        )
        forces = edge_forces(de_dr.unsqueeze(0), graph.neighbors) if compute_forces else None
        stress = None
        if compute_stress:
            vol = graph.volume.to(f64)
            stress = edge_stress(vectors, de_dr.unsqueeze(0), graph.batch, b, vol)
        return CommitteeOutput(energy=energy.unsqueeze(0), forces=forces, stress=stress)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # the tables stay float64 whatever dtype the learned model is cast to
        super()._apply(fn, recurse)
        for name in ("z", "r_in", "r_out"):
            setattr(self, name, getattr(self, name).to(torch.float64))
        return self


def _check_radii(name: str, r_in: float, r_out: float, cutoff: float | None) -> None:
    if not (r_in > 0 and r_out > 0):
        raise ValueError(f"pair {name}: radii must be positive, got {r_in} and {r_out} Å")
    if r_in >= r_out:
        raise ValueError(f"pair {name}: inner radius {r_in} Å must be below outer {r_out} Å")
    if cutoff is not None and r_out > cutoff:
        raise ValueError(
            f"pair {name}: outer radius {r_out:.3g} Å exceeds the model cutoff {cutoff:g} Å"
        )


class WithRepulsion(nn.Module):
    """A learned committee plus the repulsion, added to every member: a
    :class:`~mlip_core.committee.CommitteeModel` (``species``, ``cutoff``, ``n_members``,
    ``dtype`` and ``species_index`` are the learned model's).

    Attributes:
        learned: the learned committee (any backend), trained on the residual.
        repulsion: the :class:`ZBLRepulsion` of the learned model's species.

    Raises:
        ValueError: the species differ, or an outer radius exceeds the learned cutoff.
    """

    def __init__(self, learned: Any, repulsion: ZBLRepulsion) -> None:
        super().__init__()
        if list(learned.species) != repulsion.species:
            raise ValueError(
                f"repulsion species {repulsion.species} differ from the model's {learned.species}"
            )
        if repulsion.max_radius > learned.cutoff:
            raise ValueError(
                f"repulsion outer radius {repulsion.max_radius:.3g} Å exceeds the model cutoff "
                f"{learned.cutoff:g} Å"
            )
        self.learned = learned
        self.repulsion = repulsion

    @property
    def species(self) -> list[int]:
        """Atomic numbers known to the model."""
        return list(self.learned.species)

    @property
    def species_index(self) -> dict[int, int]:
        """Map atomic number -> species index."""
        return {z: i for i, z in enumerate(self.species)}

    @property
    def cutoff(self) -> float:
        """Cutoff radius, Å."""
        return float(self.learned.cutoff)

    @property
    def n_members(self) -> int:
        """Committee size K."""
        return int(self.learned.n_members)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the learned model."""
        return getattr(self.learned, "dtype", torch.float64)

    def select_members(self, indices: list[int]) -> WithRepulsion:
        """The given members of the learned committee, with the same repulsion."""
        return WithRepulsion(self.learned.select_members(indices), self.repulsion)

    def predict(
        self,
        graph: AtomicGraph,
        *,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> CommitteeOutput:
        """The learned members' predictions plus the repulsion (same shapes and dtypes as the
        learned model's output: energy ``(K, B)``, forces ``(K, N, 3)``, stress
        ``(K, B, 3, 3)``)."""
        out = self.learned.predict(
            graph,
            compute_forces=compute_forces,
            compute_stress=compute_stress,
            create_graph=create_graph,
        )
        base = self.repulsion.predict(
            graph,
            compute_forces=out.forces is not None,
            compute_stress=out.stress is not None,
        )

        def add(learned: torch.Tensor | None, extra: torch.Tensor | None) -> torch.Tensor | None:
            if learned is None or extra is None:
                return learned
            return learned + extra.to(learned.dtype)

        return CommitteeOutput(
            energy=add(out.energy, base.energy),  # type: ignore[arg-type]
            forces=add(out.forces, base.forces),
            stress=add(out.stress, base.stress),
            uncertainty=out.uncertainty,
        )


def unwrap(model: Any) -> tuple[Any, ZBLRepulsion | None]:
    """``(learned model, repulsion or None)`` of a wrapped or bare committee."""
    if isinstance(model, WithRepulsion):
        return model.learned, model.repulsion
    return model, None


def with_repulsion(model: Any, repulsion: ZBLRepulsion | None) -> Any:
    """``model`` (bare: unwrapped first) with ``repulsion`` added, or bare when it is None."""
    learned, _ = unwrap(model)
    if repulsion is None:
        return learned
    return WithRepulsion(learned, repulsion.for_species(learned.species))
