"""The explorer contract (:func:`check_explorer`) and its committee test double.

:class:`SpreadCommittee` wraps any ASE calculator (EMT by default) as a committee calculator
whose members disagree by a known, smooth amount, so an explorer's frames can be checked against
the trust window without a trained model.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

__all__ = ["SpreadCommittee", "check_explorer", "vacancy_hop"]


class SpreadCommittee(Calculator):
    """A K-member committee around a reference calculator: member ``k`` adds
    ``spread * s_k * sin(positions)`` (eV/Å) to the reference forces, ``s = (-1, 1, ...)``, so
    the force deviation is about ``spread`` and is a smooth function of the positions.
    Reports ``forces_committee`` (K, N, 3) and ``energy_committee`` (K,) like
    :class:`mlip_core.calculator.CommitteeCalculator`."""

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, reference: Calculator | None = None, spread: float = 0.1, k: int = 2):
        super().__init__()
        from ase.calculators.emt import EMT

        self.reference = reference or EMT()
        self.spread, self.k = float(spread), int(k)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[override]
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()  # type: ignore[union-attr]
        a.calc = self.reference
        e, f = a.get_potential_energy(), a.get_forces()
        signs = np.array([(-1) ** (m + 1) for m in range(self.k)], dtype=float)
        pert = np.sin(a.positions)
        fc = f[None] + self.spread * signs[:, None, None] * pert[None]
        ec = e + 1e-3 * self.spread * signs * len(a)
        self.results = {
            "energy": float(ec.mean()),
            "free_energy": float(ec.mean()),
            "forces": fc.mean(0),
            "forces_committee": fc,
            "energy_committee": ec,
        }
        if all(a.pbc):
            self.results["stress"] = a.get_stress()


def vacancy_hop(size: int = 2) -> list[Atoms]:
    """Initial and final state of a nearest-neighbour vacancy hop in fcc Cu (a = 3.61 Å, cubic
    cell repeated ``size`` times): the final state has one neighbour of the vacancy moved into
    it (same atoms, same order)."""
    from ase.build import bulk

    cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (size, size, size)
    del cell[0]  # the vacancy at the origin
    vac = np.zeros(3)
    dists = np.linalg.norm(cell.get_positions(), axis=1)
    hop = int(np.argmin(dists))
    final = cell.copy()
    final.positions[hop] = vac
    return [cell, final]


def check_explorer(
    explorer: Any,
    params: dict[str, Any] | None = None,
    structures: list[Atoms] | None = None,
) -> None:
    """Check an explorer against the :class:`mlip_core.explorers.Explorer` contract.

    ``params`` (default ``{}``; keep them small) build the explorer's ``params_cls``;
    ``structures`` default to :func:`vacancy_hop` (two structures). Rules: it is an ``Explorer``
    with a dataclass ``params_cls``; ``starts`` gives valid indices; with a committee whose
    deviation (~0.1 eV/Å) lies inside the trust window it returns calc-free frames whose
    ``info`` holds ``step``, ``uncertainty``, ``max_force_dev``, ``status``, ``failed`` and its
    ``origin_keys``, each status the window's verdict, finite deviations; the same seed gives
    the same frames; with ``hi`` below the deviation it stops early with a ``stop_reason`` and a
    failed frame instead of raising.
    """
    from .explorers import Explorer, make_params
    from .monitor import Trust
    from .plugins import missing_members

    assert isinstance(explorer, Explorer), (
        f"{explorer!r} does not implement Explorer: lacks {missing_members(explorer, Explorer)}"
    )
    assert is_dataclass(explorer.params_cls), "params_cls must be a dataclass"
    p = make_params(explorer, params or {})
    structures = structures or vacancy_hop()
    idx = explorer.starts(p, len(structures))
    assert idx and all(0 <= i < len(structures) for i in idx), f"bad starts {idx}"
    t = explorer.temperature(p)
    assert t is None or t >= 0, f"temperature {t}"
    starts = [structures[i] for i in idx]
    trust = Trust(lo=0.02, hi=5.0, min_distance=0.5)

    def run(tr: Trust, seed: int) -> Any:
        return explorer.explore(starts, SpreadCommittee(spread=0.1), tr, p, seed)

    res = run(trust, 3)
    assert res.frames, f"{explorer.name}: no frames"
    assert not res.stopped_early, f"{explorer.name}: stopped early: {res.stop_reason}"
    keys = {"step", "uncertainty", "max_force_dev", "status", "failed", *explorer.origin_keys}
    for f in res.frames:
        assert isinstance(f, Atoms) and f.calc is None, "frames must be calculator-free Atoms"
        missing = keys - set(f.info)
        assert not missing, f"{explorer.name}: frame info lacks {sorted(missing)}"
        assert np.isfinite(f.info["uncertainty"]) and f.info["uncertainty"] > 0
        want = trust.status(f.info["uncertainty"], f.info.get("max_devi_e", float("nan")))
        assert f.info["status"] == want, f"status {f.info['status']} but the window says {want}"
    again = run(trust, 3)
    assert len(again.frames) == len(res.frames) and all(
        np.allclose(a.positions, b.positions) for a, b in zip(again.frames, res.frames, strict=True)
    ), f"{explorer.name}: the same seed gave different frames"
    lost = run(Trust(lo=0.001, hi=0.01, min_distance=0.5), 3)
    assert lost.stopped_early and lost.stop_reason, f"{explorer.name}: did not stop above hi"
    assert any(f.info["failed"] for f in lost.frames), "the frame that stopped it is not kept"
    for f in fields(explorer.params_cls):
        assert f.name.isidentifier()
