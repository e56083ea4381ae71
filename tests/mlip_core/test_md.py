"""Tests for mlip_core.md: exploration walkers with a committee uncertainty monitor.

The committee is a test double: EMT forces plus member-specific perturbations that sum to
zero over members (so the committee mean is exactly EMT) and whose per-atom population
deviation is exactly ``amplitude(atoms)`` — the uncertainty is known and controllable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from mlip_core.md import WalkerResult, WalkerSpec, run_walker, run_walkers
from mlip_core.monitor import Trust
from mlip_core.uncertainty import atomic_force_deviation, max_force_deviation

Amplitude = Callable[[Atoms], np.ndarray]


class CommitteeEMT(Calculator):
    """K-member 'committee': EMT plus perturbations of known per-atom deviation."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(
        self,
        amplitude: Amplitude | float = 0.01,
        n_members: int = 4,
        nan_after_calls: int | None = None,
        raise_after_calls: int | None = None,
        raise_type: type[Exception] = RuntimeError,
        min_distance: float = 0.0,
        seed: int = 0,
        energy_spread: float | None = None,
    ) -> None:
        super().__init__()
        self.energy_spread = energy_spread  # eV/atom between successive members
        self.amplitude = amplitude
        self.n_members = n_members
        self.nan_after_calls = nan_after_calls
        self.raise_after_calls = raise_after_calls
        self.raise_type = raise_type
        self.min_distance = min_distance
        self.seed = seed
        self.n_calls = 0
        self._emt = EMT()

    def directions(self, n_atoms: int) -> np.ndarray:
        """(K, N, 3) fixed member directions: zero member-mean, unit per-atom deviation."""
        d = np.random.default_rng(self.seed).normal(size=(self.n_members, n_atoms, 3))
        d -= d.mean(axis=0)
        return d / atomic_force_deviation(d)[None, :, None]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.n_calls += 1
        if self.raise_after_calls is not None and self.n_calls > self.raise_after_calls:
            raise self.raise_type("explosion in the test double")
        if self.min_distance > 0:  # like CommitteeCalculator's structure check
            d = self.atoms.get_all_distances(mic=True)[np.triu_indices(len(self.atoms), 1)]
            if d.min() < self.min_distance:
                raise ValueError(f"atoms closer than {self.min_distance} Å")
        a = self.atoms.copy()
        a.calc = self._emt
        e = a.get_potential_energy()
        f = a.get_forces()
        s = a.get_stress() if a.cell.rank == 3 else np.zeros(6)
        amp = self.amplitude
        amp = np.full(len(a), float(amp)) if np.isscalar(amp) else np.asarray(amp(self.atoms))
        fc = f[None] + amp[None, :, None] * self.directions(len(a))
        if self.nan_after_calls is not None and self.n_calls > self.nan_after_calls:
            fc[:, 0, :] = np.nan
        forces = fc.mean(axis=0)
        energies = e + 0.001 * np.arange(self.n_members)
        extra = {}
        if self.energy_spread is not None:  # members differ in energy, not in forces
            energies = e + self.energy_spread * len(a) * np.arange(self.n_members)
            extra["energy_committee"] = energies
        self.results = {
            **extra,
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "forces": forces,
            "stress": s,
            "energies": energies,
            "forces_committee": fc,
            "forces_std": atomic_force_deviation(fc),
            "max_force_dev": max_force_deviation(fc),
        }


def cu32(rattle: float = 0.0) -> Atoms:
    a = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    if rattle:
        a.rattle(rattle, seed=1)
    return a


def displacement_amplitude(start: Atoms, gain: float = 2.0) -> Amplitude:
    """Deviation grows with each atom's displacement from the start structure."""
    r0 = start.positions.copy()

    def amp(atoms: Atoms) -> np.ndarray:
        return 0.01 + gain * np.linalg.norm(atoms.positions - r0, axis=1)

    return amp


TRUST_FIELDS = {f.name for f in dataclasses.fields(Trust)}


def quick_spec(**kw) -> WalkerSpec:
    base = {
        "ensemble": "nvt",
        "temperature_K": 600.0,
        "timestep_fs": 4.0,
        "n_steps": 60,
        "record_every": 5,
        "friction": 0.02,
        "seed": 7,
    }
    trust = {"lo": 0.02, "hi": 1e6}
    for key, value in kw.items():
        (trust if key in TRUST_FIELDS else base)[key] = value
    return WalkerSpec(**base, trust=Trust(**trust))


@pytest.fixture(scope="module")
def reference_run() -> tuple[Atoms, WalkerResult]:
    """A walker that never stops: its per-step deviation trace is the ground truth."""
    start = cu32()
    res = run_walker(start, CommitteeEMT(displacement_amplitude(start)), quick_spec(record_every=1))
    assert not res.stopped_early
    return start, res


def test_stops_at_first_step_above_hi(reference_run) -> None:
    start, ref = reference_run
    trace = ref.step_deviations
    assert trace.shape == (61,) and np.all(np.diff(trace[:5]) > 0)  # grows as atoms move
    hi = float(np.quantile(trace, 0.5))
    first = int(np.flatnonzero(trace >= hi)[0])
    assert 5 < first < 60

    res = run_walker(start, CommitteeEMT(displacement_amplitude(start)), quick_spec(hi=hi))
    assert res.stopped_early
    assert res.stop_step == first
    assert res.n_steps_done == first
    assert res.stop_reason == f"uncertainty above hi at step {first}: {trace[first]:.3g} eV/Å"
    # the same seed replays the same trajectory up to the stop
    np.testing.assert_array_equal(res.step_deviations, trace[: first + 1])
    # every 5th step below the stop is recorded, then the failed frame
    below = [s for s in range(0, first, 5)]
    assert res.steps.tolist() == [*below, first]
    assert [f.info["failed"] for f in res.frames] == [False] * len(below) + [True]
    assert res.failed_frame is res.frames[-1]
    assert res.frames[-1].info["status"] == "failed"
    np.testing.assert_array_equal(res.deviations, trace[res.steps])
    assert np.all(res.deviations[:-1] < hi) and res.deviations[-1] >= hi
    assert res.labels[-1] == "failed" and "failed" not in res.labels[:-1].tolist()


def test_recorded_deviation_is_max_force_deviation_of_members(reference_run) -> None:
    start, ref = reference_run
    calc = CommitteeEMT(displacement_amplitude(start))
    for frame in ref.frames[::10]:
        a = frame.copy()
        a.calc = calc
        a.get_forces()
        expected = max_force_deviation(calc.results["forces_committee"])
        assert frame.info["max_force_dev"] == pytest.approx(expected, rel=1e-12)
        assert frame.info["uncertainty"] == frame.info["max_force_dev"]
        assert frame.info["mlip_energy"] == pytest.approx(calc.results["energy"], rel=1e-12)
    assert ref.frames[3].info["time_fs"] == pytest.approx(3 * 4.0)
    assert ref.frames[3].info["step"] == 3


def test_frames_are_independent_copies_without_calculator(reference_run) -> None:
    start, ref = reference_run
    assert all(f.calc is None for f in ref.frames)
    assert not np.shares_memory(ref.frames[0].positions, ref.frames[1].positions)
    before = ref.frames[2].positions.copy()
    ref.frames[1].positions += 1.0
    np.testing.assert_array_equal(ref.frames[2].positions, before)
    ref.frames[1].positions -= 1.0
    np.testing.assert_array_equal(start.positions, cu32().positions)  # start untouched
    assert start.calc is None
    assert not np.allclose(ref.frames[-1].positions, start.positions)


def test_seeded_runs_are_reproducible_and_seed_matters() -> None:
    start = cu32()
    spec = quick_spec(n_steps=20)
    a = run_walker(start, CommitteeEMT(0.05), spec)
    b = run_walker(start, CommitteeEMT(0.05), spec)
    c = run_walker(start, CommitteeEMT(0.05), quick_spec(n_steps=20, seed=8))
    for fa, fb in zip(a.frames, b.frames, strict=True):
        np.testing.assert_array_equal(fa.positions, fb.positions)
        np.testing.assert_array_equal(fa.get_momenta(), fb.get_momenta())
    assert not np.allclose(a.frames[-1].positions, c.frames[-1].positions)


def test_nvt_thermalises() -> None:
    spec = quick_spec(
        temperature_K=300.0, n_steps=400, record_every=2, timestep_fs=4.0, friction=0.02, seed=3
    )
    res = run_walker(cu32(), CommitteeEMT(0.01), spec)
    assert not res.stopped_early and res.n_steps_done == 400
    temps = np.array([f.info["temperature_K"] for f in res.frames])
    mean_T = temps[len(temps) // 2 :].mean()
    assert abs(mean_T - 300.0) < 0.25 * 300.0, mean_T
    assert abs(temps[0] - 300.0) < 0.5 * 300.0  # initial Maxwell-Boltzmann draw


def test_nve_conserves_total_energy() -> None:
    spec = WalkerSpec(
        ensemble="nve",
        temperature_K=600.0,
        timestep_fs=2.0,
        n_steps=300,
        record_every=5,
        seed=2,
        trust=Trust(lo=0.02, hi=1e6),
    )
    res = run_walker(cu32(), CommitteeEMT(0.01), spec)
    assert not res.stopped_early
    e_tot = res.energies + np.array([f.get_kinetic_energy() for f in res.frames])
    e_kin = np.array([f.get_kinetic_energy() for f in res.frames])
    n = len(res.frames[0])
    assert np.ptp(e_kin) / n > 0.01  # energy really flows between kinetic and potential
    assert np.ptp(e_tot) / n < 5e-4  # ... but the total is conserved (0.07 meV/atom measured)
    assert np.all(np.abs(res.frames[-1].get_momenta().sum(axis=0)) < 1e-8)  # Stationary


@pytest.mark.parametrize(("pressure", "sign"), [(10.0, -1), (-5.0, +1)])
def test_npt_changes_volume_with_pressure(pressure: float, sign: int) -> None:
    start = cu32()
    spec = quick_spec(
        ensemble="npt",
        temperature_K=300.0,
        pressure_GPa=pressure,
        n_steps=150,
        timestep_fs=4.0,
        barostat_time_fs=200.0,
    )
    res = run_walker(start, CommitteeEMT(0.01), spec)
    assert not res.stopped_early
    v0 = start.get_volume()
    v_end = np.mean([f.get_volume() for f in res.frames[-5:]])
    assert sign * (v_end - v0) / v0 > 0.01
    # hydrostatic: the cell stays cubic
    cell = res.frames[-1].cell[:]
    np.testing.assert_allclose(cell, np.diag(np.diag(cell)), atol=1e-9)
    assert np.ptp(np.diag(cell)) < 1e-9


def test_nan_forces_stop_cleanly() -> None:
    res = run_walker(cu32(), CommitteeEMT(0.01, nan_after_calls=12), quick_spec(n_steps=50))
    assert res.stopped_early
    assert res.stop_reason == f"nan forces at step {res.stop_step}"
    assert 0 < res.stop_step < 50
    assert res.frames[-1].info["failed"] and np.isnan(res.deviations[-1])
    assert np.all(np.isfinite(res.frames[-1].positions))
    assert res.labels[-1] == "failed"
    assert np.all(np.isfinite(res.deviations[:-1]))


def test_calculator_error_mid_run_stops_cleanly() -> None:
    res = run_walker(cu32(), CommitteeEMT(0.01, raise_after_calls=10), quick_spec(n_steps=50))
    assert res.stopped_early
    assert 0 < res.stop_step < 50
    assert res.stop_reason == (
        f"calculator error at step {res.stop_step}: RuntimeError: explosion in the test double"
    )
    # the configuration the calculator choked on is kept (marked) for labelling
    assert res.frames[-1].info["failed"] and res.frames[-1].info["step"] == res.stop_step
    assert np.isnan(res.step_deviations[-1]) and len(res.step_deviations) == res.stop_step + 1


def test_floating_point_error_from_calculator_is_nan_forces() -> None:
    calc = CommitteeEMT(0.01, raise_after_calls=10, raise_type=FloatingPointError)
    res = run_walker(cu32(), calc, quick_spec(n_steps=50))
    assert res.stop_reason.startswith(f"nan forces at step {res.stop_step} (")


def test_nan_at_start_stops_but_other_start_errors_raise() -> None:
    nan0 = CommitteeEMT(0.01, raise_after_calls=0, raise_type=FloatingPointError)
    res = run_walker(cu32(), nan0, quick_spec(n_steps=5))
    assert res.stopped_early and res.stop_step == 0
    assert res.stop_reason.startswith("nan forces at step 0")
    broken = CommitteeEMT(0.01, raise_after_calls=0, raise_type=KeyError)
    with pytest.raises(KeyError):
        run_walker(cu32(), broken, quick_spec(n_steps=5))
    # npt evaluates forces while building the integrator: same handling
    res = run_walker(cu32(), nan0, quick_spec(ensemble="npt", n_steps=5))
    assert res.stop_reason.startswith("nan forces at step 0")


def test_calculator_refusing_close_atoms_reports_atoms_too_close() -> None:
    # The calculator refuses pairs below 2.3 Å (like CommitteeCalculator's check) and the
    # walker's own check is at the same distance: the refusal is reported as a geometry stop.
    spec = quick_spec(temperature_K=2500.0, min_distance=2.3, n_steps=300)
    res = run_walker(cu32(), CommitteeEMT(0.01, min_distance=2.3), spec)
    assert res.stop_reason.startswith(f"atoms too close at step {res.stop_step}: atoms ")
    assert res.frames[-1].info["failed"]


def test_atoms_too_close_stops() -> None:
    # Cu nearest neighbours are 2.55 Å apart; at 1500 K pairs come within 2.4 Å quickly.
    spec = quick_spec(temperature_K=1500.0, min_distance=2.4, n_steps=200)
    res = run_walker(cu32(), CommitteeEMT(0.01), spec)
    assert res.stopped_early and res.stop_reason.startswith(
        f"atoms too close at step {res.stop_step}: atoms "
    )
    assert "< min_distance=2.4 Å" in res.stop_reason
    assert res.frames[-1].info["failed"]


def test_start_above_hi_stops_at_step_zero() -> None:
    res = run_walker(cu32(), CommitteeEMT(0.8), quick_spec(hi=0.5))
    assert res.stop_step == 0 and res.n_steps_done == 0
    assert res.stop_reason == "uncertainty above hi at step 0: 0.8 eV/Å"
    assert len(res.frames) == 1 and res.frames[0].info["failed"]


def test_relative_deviation_is_used_when_asked(reference_run) -> None:
    start, _ = reference_run
    spec = quick_spec(n_steps=10, record_every=5, relative=True, lo=0.001, hi=1e3)
    calc = CommitteeEMT(displacement_amplitude(start))
    res = run_walker(start, calc, spec)
    frame = res.frames[-1]
    a = frame.copy()
    a.calc = CommitteeEMT(displacement_amplitude(start))
    a.get_forces()
    fc = a.calc.results["forces_committee"]
    assert frame.info["uncertainty"] == pytest.approx(max_force_deviation(fc, relative=True))
    assert frame.info["max_force_dev"] == pytest.approx(max_force_deviation(fc))
    assert res.deviations[-1] == pytest.approx(frame.info["uncertainty"])


def test_candidate_indices_follow_trust_window(reference_run) -> None:
    _, ref = reference_run
    lo = float(np.median(ref.deviations))
    res = WalkerResult(**{**ref.__dict__, "spec": quick_spec(record_every=1, lo=lo)})
    np.testing.assert_array_equal(res.candidate_indices, np.flatnonzero(ref.deviations >= lo))


def test_calculator_without_committee_results_is_rejected() -> None:
    with pytest.raises(ValueError, match="forces_committee"):
        run_walker(cu32(), EMT(), quick_spec(n_steps=2))


def test_run_walkers_product_of_starts_and_specs() -> None:
    starts = [cu32(), cu32(rattle=0.05)]
    specs = [quick_spec(n_steps=4, temperature_K=300.0), quick_spec(n_steps=4, temperature_K=900.0)]
    made: list[CommitteeEMT] = []

    def factory() -> CommitteeEMT:
        made.append(CommitteeEMT(0.01))
        return made[-1]

    results = run_walkers(starts, factory, specs)
    assert len(results) == 4 and len(made) == 4
    assert [r.start_index for r in results] == [0, 0, 1, 1]
    assert [r.spec.temperature_K for r in results] == [300.0, 900.0, 300.0, 900.0]
    np.testing.assert_allclose(results[2].frames[0].positions, starts[1].positions)
    with pytest.raises(ValueError, match="at least one start"):
        run_walkers([], factory, specs)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ensemble": "nph"}, "unknown ensemble 'nph'"),
        ({"timestep_fs": 0.0}, "timestep_fs"),
        ({"record_every": 0}, "record_every"),
        ({"n_steps": -1}, "n_steps"),
        ({"lo": 0.5, "hi": 0.1}, "lo < hi"),
        ({"temperature_K": 0.0}, "temperature_K > 0"),
        ({"friction": -1.0}, "friction"),
    ],
)
def test_spec_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        quick_spec(**kw)


def test_npt_needs_periodic_cell() -> None:
    mol = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    with pytest.raises(ValueError, match="periodic"):
        run_walker(mol, CommitteeEMT(0.01), quick_spec(ensemble="npt", n_steps=2))


def test_units_timestep_in_fs() -> None:
    # a free atom pair at rest except one atom moving at known speed: NVE, no forces beyond cutoff
    a = Atoms("Cu2", positions=[[0, 0, 0], [20, 0, 0]])
    v = 0.01 * units.Ang / units.fs  # 0.01 Å/fs
    a.set_velocities([[v, 0, 0], [0, 0, 0]])
    spec = WalkerSpec(
        ensemble="nve",
        timestep_fs=2.0,
        n_steps=10,
        record_every=10,
        init_velocities=False,
        trust=Trust(lo=0.02, hi=1e6),
        temperature_K=0.0,
    )
    res = run_walker(a, CommitteeEMT(0.0), spec)
    assert res.frames[-1].positions[0, 0] == pytest.approx(0.01 * 20.0, rel=1e-6)


def test_energy_deviation_per_atom_joins_the_trust_decision() -> None:
    """Members that agree on forces (deviation 0.005 eV/Å < lo) but disagree on energy by
    0.02 eV/atom per member: forces alone call every frame accurate; with energy_lo the
    frames are candidates; with energy_hi below the deviation the walker stops at step 0.
    max_devi_e is DeePMD's: std over members of E/N."""
    spread = 0.02
    expected = float(np.std(spread * np.arange(4)))  # 0.02236 eV/atom
    forces_only = run_walker(cu32(), CommitteeEMT(0.005, energy_spread=spread), quick_spec())
    assert set(forces_only.labels) == {"accurate"}
    assert forces_only.frames[0].info["max_devi_e"] == pytest.approx(expected, rel=1e-9)
    assert np.all(
        np.isnan([f.info["max_devi_v"] for f in forces_only.frames])
    )  # no members' stress
    flagged = run_walker(
        cu32(), CommitteeEMT(0.005, energy_spread=spread), quick_spec(energy_lo=0.01)
    )
    assert set(flagged.labels) == {"candidate"} and not flagged.stopped_early
    assert [f.info["status"] for f in flagged.frames] == list(flagged.labels)
    cut = run_walker(
        cu32(),
        CommitteeEMT(0.005, energy_spread=spread),
        quick_spec(energy_lo=0.01, energy_hi=0.02),
    )
    assert cut.stopped_early and cut.stop_step == 0 and "energy_hi" in cut.stop_reason
    with pytest.raises(ValueError, match="energy_committee"):  # thresholds need member energies
        run_walker(cu32(), CommitteeEMT(0.005), quick_spec(energy_lo=0.01))
    with pytest.raises(ValueError, match="energy_lo must be < energy_hi"):
        quick_spec(energy_lo=0.02, energy_hi=0.01)


def test_max_devi_v_is_the_virial_per_atom_deviation() -> None:
    """Against the formula by hand: W = -sigma V / N per member (3x3), std over members,
    max over the 9 components; zero for identical members; member order does not matter."""
    from ase.stress import voigt_6_to_full_3x3_stress

    from mlip_core.uncertainty import max_devi_e, max_devi_v

    rng = np.random.default_rng(3)
    st = rng.normal(scale=0.01, size=(4, 6))
    vol, n = 47.0, 4
    w = -np.array([voigt_6_to_full_3x3_stress(x) for x in st]) * vol / n
    assert max_devi_v(st, vol, n) == pytest.approx(w.reshape(4, 9).std(axis=0).max(), rel=1e-12)
    assert max_devi_v(st[::-1], vol, n) == pytest.approx(max_devi_v(st, vol, n), rel=1e-12)
    assert max_devi_v(np.repeat(st[:1], 4, axis=0), vol, n) == 0.0
    assert max_devi_e([1.0, 3.0], 2) == pytest.approx(0.5)


def test_trust_status_bands_are_classify_and_bad_windows_are_refused() -> None:
    """Trust.status (per MD step) gives classify's bands, NaN and inf included; a window that
    cannot judge anything is refused when the Trust is built, naming the problem."""
    from mlip_core.monitor import TrustError
    from mlip_core.selection import classify

    trust = Trust(lo=0.05, hi=0.5)
    values = [0.0, 0.049, 0.05, 0.3, 0.4999, 0.5, 0.7, float("nan"), float("inf")]
    assert [trust.status(v, float("nan")) for v in values] == list(classify(values, 0.05, 0.5))
    for kwargs, match in [
        ({"lo": 0.5, "hi": 0.1}, "lo < hi"),
        ({"lo": float("nan")}, "lo must be a number"),
        ({"relative_eps": 0.0}, "relative_eps"),
        ({"min_distance": -1.0}, "min_distance"),
        ({"energy_lo": 0.2, "energy_hi": 0.1}, "energy_lo must be < energy_hi"),
    ]:
        with pytest.raises(TrustError, match=match):
            Trust(**kwargs)
