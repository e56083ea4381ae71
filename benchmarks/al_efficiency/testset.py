"""The held-out test and validation sets (oracle-driven MD, labelled by the campaign's labeler)
and the evaluation of a committee on them."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from workflows.config import CampaignConfig, ConfigError

from .config import BenchConfig, _surface

__all__ = ["build_test_set", "evaluate", "oracle_calculator", "stable_seed"]


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed from a hash of ``parts`` (same parts, same seed, on every machine)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31)


def oracle_calculator(campaign: CampaignConfig, labeler: Any) -> Any:
    """An ASE calculator for the oracle: ASE's EMT itself for the ``emt`` labeler (faster),
    else the labeler behind :class:`benchmarks.al_efficiency.properties.LabelerCalculator`."""
    from ase.calculators.emt import EMT

    from benchmarks.al_efficiency.properties import LabelerCalculator

    return EMT() if campaign.labeler.name == "emt" else LabelerCalculator(labeler)


def _label(labeler: Any, structures: list[Any]) -> list[Any]:
    """Oracle labels attached under ``REF_*`` keys; failed labels are dropped."""
    from mlip_core.training import attach_labels

    out = []
    for at in structures:
        res = labeler.label(at)
        if res.ok:
            out.append(attach_labels(at, res.energy, res.forces, res.stress))
    return out


def _oracle_md(
    atoms: Any,
    calc: Any,
    temperature: float,
    n_frames: int,
    stride: int,
    equilibration: int,
    seed: int,
) -> list[Any]:
    """``n_frames`` snapshots of Langevin MD driven by ``calc`` (2 fs steps, K)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    work = atoms.copy()
    work.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(work, temperature, rng=rng)
    Stationary(work)
    dyn = Langevin(
        work, 2.0 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False
    )
    if equilibration:
        dyn.run(equilibration)
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        f = work.copy()
        f.calc = None
        frames.append(f)
    return frames


def build_test_set(
    bench: BenchConfig, campaign: CampaignConfig, *, seed: int, n_frames: int
) -> list[Any]:
    """Oracle-labelled frames per regime (``info['regime']``): bulk at each temperature, a
    melt, vacancy, each strain, surface; ``n_frames`` each. The oracle's own MD generates them (not
    the committee's), so no arm ever explores them. Raises :class:`ConfigError` for an
    unsupported surface."""
    from ase.build import bulk

    from workflows.steps import make_labeler

    m, ts = bench.material, bench.test_set
    labeler = make_labeler(campaign)
    calc = oracle_calculator(campaign, labeler)
    base = bulk(m.element, m.crystal, a=m.lattice_constant, cubic=True).repeat(ts.bulk_repeat)
    regimes: list[tuple[str, Any, float]] = [(f"bulk-{t:g}K", base, t) for t in ts.temperatures]
    melt = None
    if ts.melt_temperature is not None:
        melt = f"melt-{ts.melt_temperature:g}K"
        regimes.append((melt, base, ts.melt_temperature))
    vac = base.copy()
    del vac[0]
    regimes.append(("vacancy", vac, ts.vacancy_temperature))
    for s in ts.strains:
        st = base.copy()
        st.set_cell(st.cell.array * (1 + s), scale_atoms=True)
        regimes.append((f"strain{s:+g}", st, ts.strain_temperature))
    if m.crystal == "fcc":
        try:
            slab = _surface(m.element, ts.surface_size, m.lattice_constant, ts.surface)
        except ConfigError as exc:
            raise ConfigError(f"test_set.{exc}") from None
        slab.center(vacuum=8.0, axis=2)
        regimes.append((f"surface{''.join(map(str, ts.surface))}", slab, ts.surface_temperature))
    out = []
    for r, (name, atoms, temp) in enumerate(regimes):
        frames = _oracle_md(
            atoms,
            calc,
            temp,
            n_frames,
            ts.stride,
            ts.melt_equilibration if name == melt else ts.equilibration,
            stable_seed(seed, "test", r),
        )
        for f in _label(labeler, frames):
            f.info["regime"] = name
            out.append(f)
    return out


def evaluate(model: Any, structures: list[Any]) -> dict[str, Any]:
    """Committee-mean errors on labelled structures plus per-frame uncertainty and error.

    Returns ``force_rmse`` (eV/Å, over Cartesian components), ``energy_rmse`` (eV/atom), the
    same per regime (``per_regime``), and per frame ``max_dev`` (max atomic force deviation,
    eV/Å, or the backend's own uncertainty where it gives one: GAP's GP sd, eV), ``max_err`` (max atomic |F_mean - F_ref|, eV/Å) and ``regime``.
    """
    from mlip_core.calculator import CommitteeCalculator

    calc = CommitteeCalculator(model, min_distance=0.0)
    f_sq: dict[str, list[float]] = {}
    e_sq: dict[str, list[float]] = {}
    n_comp: dict[str, int] = {}
    devs, errs, regimes = [], [], []
    for at in structures:
        calc.calculate(at, ["energy", "forces"])
        r = calc.results
        df = r["forces"] - at.arrays["REF_forces"]
        de = (r["energy"] - at.info["REF_energy"]) / len(at)
        reg = str(at.info.get("regime", "all"))
        for key in ("all", reg):
            f_sq.setdefault(key, []).append(float(np.sum(df**2)))
            n_comp[key] = n_comp.get(key, 0) + df.size
            e_sq.setdefault(key, []).append(de**2)
        # the backend's own uncertainty where it has one (GAP: the GP sd, eV), else the
        # committee's max atomic force deviation (eV/Å): what the trust window judges
        model_u = r.get("uncertainty_source") == "model"
        devs.append(float(r["max_uncertainty"] if model_u else r["max_force_dev"]))
        errs.append(float(np.max(np.linalg.norm(df, axis=1))))
        regimes.append(reg)
    per = {
        k: {
            "force_rmse": math.sqrt(sum(f_sq[k]) / n_comp[k]),
            "energy_rmse": math.sqrt(float(np.mean(e_sq[k]))),
        }
        for k in f_sq
        if k != "all"
    }
    return {
        "force_rmse": math.sqrt(sum(f_sq["all"]) / n_comp["all"]),
        "energy_rmse": math.sqrt(float(np.mean(e_sq["all"]))),
        "per_regime": per,
        "max_dev": devs,
        "max_err": errs,
        "regime": regimes,
    }
