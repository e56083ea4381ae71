"""Temperature / pressure ramps of MD walkers and the pair-relative distance guard (fusion)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from mlip_core.calculator import CommitteeCalculator
from mlip_core.contract_explore import SpreadCommittee
from mlip_core.explorers import get_explorer, make_params
from mlip_core.md import WalkerError, WalkerSpec, run_walker
from mlip_core.monitor import DistanceGuard, Trust, TrustError
from mlip_core.udd import UDDCalculator
from mlip_core.validation import StructureError

WIDE = {"lo": 0.5, "hi": 5.0}  # the SpreadCommittee's ~0.01 eV/Å deviation stays accurate


def cu(n: int = 2, a: float = 3.61) -> Atoms:
    return bulk("Cu", "fcc", a=a, cubic=True) * (n, n, n)


def test_temperature_ramp_is_followed_by_the_kinetic_temperature() -> None:
    """NVT 300 -> 1500 K over 400 steps (2 fs) with a tight thermostat (20 fs): the kinetic
    temperature of the last 70 steps averages within 15 % of the ramp's targets there (about
    1400 K, where a constant run would stay near 300 K), the first 100 steps near theirs, and
    each frame carries the target it was taken at."""
    spec = WalkerSpec(
        temperature_K=300.0,
        temperature_end_K=1500.0,
        timestep_fs=2.0,
        n_steps=400,
        record_every=1,
        friction=0.05,
        seed=4,
        trust=Trust(**WIDE),
    )
    res = run_walker(cu(), SpreadCommittee(spread=0.01), spec)
    assert not res.stopped_early, res.stop_reason
    kinetic = np.array([f.info["temperature_K"] for f in res.frames])
    target = np.array([f.info["target_temperature_K"] for f in res.frames])
    steps = np.array([f.info["step"] for f in res.frames])
    assert np.allclose(target, 300.0 + 1200.0 * steps / 400)
    late, early = steps >= 330, steps <= 100
    assert kinetic[late].mean() == pytest.approx(target[late].mean(), rel=0.15)
    assert kinetic[early].mean() == pytest.approx(target[early].mean(), rel=0.3)
    print(f"ramp: late kinetic {kinetic[late].mean():.0f} K vs target {target[late].mean():.0f} K")


def test_pressure_ramp_compresses_an_npt_cell() -> None:
    """NPT 0 -> 60 GPa over 150 steps: the targets are recorded per frame and the cell shrinks
    along the ramp (EMT Cu, B ~ 140 GPa: by more than 10 % at the end)."""
    spec = WalkerSpec(
        ensemble="npt",
        temperature_K=300.0,
        pressure_end_GPa=60.0,
        timestep_fs=2.0,
        n_steps=150,
        record_every=50,
        barostat_time_fs=100.0,
        seed=2,
        trust=Trust(**WIDE),
    )
    res = run_walker(cu(), SpreadCommittee(spread=0.01), spec)
    p = [f.info["target_pressure_GPa"] for f in res.frames]
    assert p == pytest.approx([60.0 * f.info["step"] / 150 for f in res.frames])
    v = np.array([f.get_volume() for f in res.frames]) / cu().get_volume()
    assert np.all(np.diff(v) < 0) and v[-1] < 0.9


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ensemble": "nve", "temperature_end_K": 900.0}, "no thermostat"),
        ({"temperature_end_K": -5.0}, "temperature_end_K"),
        ({"pressure_end_GPa": 3.0}, "only npt"),
    ],
)
def test_ramp_spec_refusals(kw: dict, match: str) -> None:
    with pytest.raises(WalkerError, match=match):
        WalkerSpec(**kw)


def test_md_params_carry_the_ramp_to_the_spec() -> None:
    md = get_explorer("md")
    p = make_params(md, {"temperature": 300, "temperature_end": 2500})
    spec = md.spec(Trust(), p, 0)
    assert spec.targets(0)[0] == 300 and spec.targets(spec.n_steps)[0] == 2500


def test_relative_guard_catches_fusion_but_not_hot_copper() -> None:
    """Cu-Cu: 0.6 x 2 x 1.32 Å = 1.584 Å. A pair at 0.80 Å (the fused committee) is caught; the
    closest approach of EMT Cu at 2500 K (1.86 Å measured) is not."""
    guard = Trust().guard
    assert guard.limit(29, 29) == pytest.approx(1.584)
    for d, caught in ((0.80, True), (1.50, True), (1.86, False)):
        pair = Atoms("Cu2", positions=[[0, 0, 0], [d, 0, 0]], cell=[9, 9, 9], pbc=True)
        found = guard.violation(pair)
        assert (found is not None) == caught
        if caught:
            assert found[0] == pytest.approx(d) and found[3] == pytest.approx(1.584)
            assert "(Cu-Cu)" in guard.message(pair, found)
    # the pair's own radii: H-H 0.6 x 0.62 Å = 0.372 Å, so a 0.74 Å H2 bond is fine
    h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[9, 9, 9], pbc=True)
    assert guard.violation(h2) is None
    assert guard.violation(cu(3)) is None  # the perfect crystal (2.55 Å neighbours)


def test_absolute_override_and_zero_means_no_check() -> None:
    pair = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[9, 9, 9], pbc=True)
    assert Trust(min_distance=0).guard.violation(pair) is None
    assert Trust(min_distance=0.2).guard.violation(pair) is None
    assert Trust(min_distance=0.5).guard.violation(pair)[3] == 0.5
    with pytest.raises(TrustError, match="min_distance_fraction"):
        Trust(min_distance_fraction=0)
    with pytest.raises(TrustError, match="min_distance must be"):
        DistanceGuard(-1.0)


def test_walker_stops_at_a_fused_pair_with_the_pair_named() -> None:
    start = cu()
    start.positions[1] = start.positions[0] + [0.9, 0.0, 0.0]
    res = run_walker(start, SpreadCommittee(spread=0.01), WalkerSpec(trust=Trust(**WIDE)))
    assert res.stopped_early and res.stop_step == 0
    assert "atoms too close at step 0: atoms 0-1 (Cu-Cu) at 0.900 Å < 1.584 Å" in res.stop_reason
    assert res.frames[-1].info["failed"]


def test_calculator_and_monitor_apply_one_rule(model64) -> None:
    """The committee calculator given a trust's guard refuses what the monitor would stop and
    accepts everything when the guard is off (``min_distance: 0``, no silent 0.5 Å)."""
    close = Atoms("CuO", positions=[[0, 0, 0], [0.4, 0, 0]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(StructureError, match=r"atoms 0-1 \(Cu-O\) at 0.400 Å < 1.188 Å"):
        CommitteeCalculator(model64, min_distance=Trust().guard).get_potential_energy(close)
    off = CommitteeCalculator(model64, min_distance=Trust(min_distance=0).guard)
    assert np.isfinite(off.get_potential_energy(close))


class SineCommittee(SpreadCommittee):
    """A conservative committee: member k is EMT + k * w * sum_i sin(x_i) (eV), so its forces
    are exact gradients and the bias force can be checked against the bias energy."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[override]
        Calculator.calculate(self, atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.reference
        e, f = a.get_potential_energy(), a.get_forces()
        w = np.arange(self.k, dtype=float) * self.spread
        x = a.positions[:, 0]
        ec = e + w * np.sin(x).sum()
        fc = np.repeat(f[None], self.k, axis=0)
        fc[:, :, 0] -= w[:, None] * np.cos(x)[None]
        self.results = {
            "energy": float(ec.mean()),
            "free_energy": float(ec.mean()),
            "forces": fc.mean(0),
            "forces_committee": fc,
            "energy_committee": ec,
        }


def test_udd_bias_force_is_minus_the_gradient_of_the_bias_energy() -> None:
    """Central differences of E_bias (Kulichenko et al. 2023) against the analytic F_bias."""
    atoms = cu()
    atoms.rattle(0.05, seed=3)
    calc = UDDCalculator(SineCommittee(spread=0.02, k=3), a=0.5, b=0.05)
    atoms.calc = calc
    f = atoms.get_forces()
    eb0 = calc.results["bias_energy"]
    assert -0.5 < eb0 < 0
    h = 1e-5
    for i, c in ((0, 0), (5, 0), (7, 1)):
        vals = []
        for s in (h, -h):
            b = atoms.copy()
            b.positions[i, c] += s
            b.calc = UDDCalculator(SineCommittee(spread=0.02, k=3), a=0.5, b=0.05)
            b.get_potential_energy()
            vals.append(b.calc.results["bias_energy"])
        fd = -(vals[0] - vals[1]) / (2 * h)
        fb = f[i, c] - calc.results["forces_committee"].mean(0)[i, c]
        assert fb == pytest.approx(fd, rel=1e-4, abs=1e-8)
    # the trust window sees the members' own forces, not the bias
    members = SineCommittee(spread=0.02, k=3)
    members.get_forces(atoms.copy())
    assert np.allclose(calc.results["forces_committee"], members.results["forces_committee"])


def test_udd_walks_toward_disagreement() -> None:
    """Same seed, same committee: the biased walker's committee energy spread ends larger than
    the plain walker's (the bias lowers the energy where the members disagree)."""
    params = {"steps": 150, "record_every": 10, "timestep": 2.0, "temperature": 300}
    trust = Trust(lo=0.5, hi=50.0)

    def spread(explorer, extra):
        p = make_params(explorer, {**params, **extra})
        res = explorer.explore([cu()], SineCommittee(spread=0.05, k=3), trust, p, 7)
        assert not res.stopped_early, res.stop_reason
        return np.mean([f.info["max_devi_e"] for f in res.frames[-5:]])

    plain = spread(get_explorer("md"), {})
    biased = spread(get_explorer("udd"), {"bias_a": 5.0, "bias_b": 0.03})
    assert biased > 1.5 * plain
