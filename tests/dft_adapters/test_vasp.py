"""VASP backend: pymatgen input generation against committed reference files, vasprun.xml
parsing (pymatgen ``Vasprun``) of committed fixtures, retry settings reaching the INCAR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.units import GPa
from pymatgen.io.vasp import Incar

from dft_adapters import Executor, FailureKind, LabelResult, RetryPolicy, get_labeler
from dft_adapters.vasp import parse_vasprun, species_order

from .conftest import FIXTURES, FakeRunner, c2_diamond_for_fixture, fake_executable

VASP = FIXTURES / "vasp"


def _sio_mixed() -> Atoms:
    return Atoms(
        "SiOSiO",
        cell=[[4, 0, 0], [0, 4.2, 0], [0.3, 0, 4.4]],
        scaled_positions=[[0, 0, 0], [0.25, 0.3, 0.2], [0.5, 0.5, 0.5], [0.7, 0.8, 0.75]],
        pbc=True,
    )


@pytest.mark.parametrize(
    ("name", "atoms"),
    [("reference_Si2", lambda: bulk("Si", "diamond", a=5.43)), ("reference_SiO_mixed", _sio_mixed)],
)
def test_generated_inputs_match_reference_files(name: str, atoms, tmp_path: Path) -> None:
    labeler = get_labeler("vasp", potcar_spec=True)
    labeler.write_inputs(atoms(), tmp_path)
    ref = VASP / name
    assert Incar.from_file(tmp_path / "INCAR") == Incar.from_file(ref / "INCAR")
    for f in ("KPOINTS", "POSCAR", "POTCAR.spec"):
        assert (tmp_path / f).read_text() == (ref / f).read_text(), f
    assert not (tmp_path / "POTCAR").exists()


def test_reference_incar_is_a_static_force_and_stress_run() -> None:
    incar = Incar.from_file(VASP / "reference_Si2/INCAR")
    assert incar["NSW"] == 0 and incar["IBRION"] == -1 and incar["ISIF"] == 2  # one SCF, stress on
    assert incar["ISMEAR"] == 0 and incar["SIGMA"] == 0.05 and incar["EDIFF"] == 1e-6
    assert incar["LWAVE"] is False and incar["LCHARG"] is False


def test_settings_reach_the_incar_and_kpoints(tmp_path: Path) -> None:
    labeler = get_labeler(
        "vasp",
        potcar_spec=True,
        kpoint_density=200,
        smearing=0.1,
        max_scf_steps=40,
        mixing=0.2,
        incar={"ENCUT": 600, "ISPIN": 1, "MAGMOM": None},
    )
    labeler.write_inputs(bulk("Si", "diamond", a=5.43), tmp_path)
    incar = Incar.from_file(tmp_path / "INCAR")
    assert (incar["ENCUT"], incar["ISPIN"], incar["SIGMA"], incar["NELM"], incar["AMIX"]) == (
        600,
        1,
        0.1,
        40,
        0.2,
    )
    assert "MAGMOM" not in incar
    grid = (tmp_path / "KPOINTS").read_text().splitlines()[3]
    assert [int(x) for x in grid.split()] == [10, 10, 10]  # 7 7 7 at the default density


def test_species_grouping_is_stable_and_invertible() -> None:
    atoms = _sio_mixed()
    order = species_order(atoms)
    assert order.tolist() == [0, 2, 1, 3]
    assert atoms[order].get_chemical_symbols() == ["Si", "Si", "O", "O"]


def test_vasprun_fixture_parsed_to_ase_units() -> None:
    """Values in vasprun_C2_static.xml: e_fr_energy -20.24695937 eV; forces eV/Å;
    stress in kBar with VASP's pressure-positive sign -> ASE eV/Å^3, Voigt xx yy zz yz xz xy."""
    parsed = parse_vasprun(VASP / "vasprun_C2_static.xml")
    assert parsed["energy"] == pytest.approx(-20.24695937, abs=1e-8)
    np.testing.assert_allclose(
        parsed["forces"], [[1.23456789, -0.5, 0.25], [-1.23456789, 0.5, -0.25]]
    )
    kbar = 0.1 * GPa
    expected = -np.array([-10.5, 20.25, 5.0, 4.5, -3.0, 2.0]) * kbar
    np.testing.assert_allclose(parsed["stress"], expected, rtol=1e-12)
    assert parsed["stress"][0] == pytest.approx(
        1.05 * GPa
    )  # -10.5 kBar (tensile) = +1.05 GPa in ASE
    assert parsed["converged_electronic"] and parsed["version"] == "6.3.0"


def test_label_through_fake_vasp_run(tmp_path: Path) -> None:
    runner = FakeRunner(
        stdout=" running on    1 total cores\n",
        files={"vasprun.xml": VASP / "vasprun_C2_static.xml"},
    )
    labeler = get_labeler(
        "vasp",
        potcar_spec=True,
        executor=Executor(
            command=fake_executable(tmp_path, "vasp_std"), launcher=None, runner=runner
        ),
    )
    result = labeler.label(c2_diamond_for_fixture(), workdir=tmp_path / "calc")
    assert isinstance(result, LabelResult), result
    assert result.energy == pytest.approx(-20.24695937)
    assert result.code_version == "vasp 6.3.0"
    workdir = Path(result.workdir)
    assert {"INCAR", "KPOINTS", "POSCAR", "POTCAR.spec", "vasprun.xml", "vasp.out"} <= {
        p.name for p in workdir.iterdir()
    }


def test_atom_count_mismatch_is_crashed(tmp_path: Path) -> None:
    runner = FakeRunner(files={"vasprun.xml": VASP / "vasprun_C2_static.xml"})
    labeler = get_labeler(
        "vasp",
        potcar_spec=True,
        retry_policy=RetryPolicy.no_retries(),
        executor=Executor(command=fake_executable(tmp_path, "vasp_std"), runner=runner),
    )
    atoms = bulk("C", "diamond", a=3.57, cubic=True)  # 8 atoms, the output has 2
    outcome = labeler.label(atoms, workdir=tmp_path / "calc")
    assert outcome.kind is FailureKind.CRASHED and "2 atoms" in outcome.message


class _Sequence:
    """Successive fake runs: the first unconverged, then converged."""

    def __init__(self, *runners: FakeRunner) -> None:
        self.runners = list(runners)
        self.incars: list[dict] = []

    def __call__(self, argv, *, cwd, **kw):
        self.incars.append(dict(Incar.from_file(cwd / "INCAR")))
        return self.runners.pop(0)(argv, cwd=cwd, **kw)


@pytest.mark.parametrize("opted_in", [False, True])
def test_retry_changes_reach_the_incar(tmp_path: Path, opted_in: bool) -> None:
    """More SCF steps and less mixing on every retry; more smearing (it changes the answer)
    only when the policy opts into it per key."""
    runner = _Sequence(
        FakeRunner(files={"vasprun.xml": VASP / "vasprun_C2_unconverged.xml"}),
        FakeRunner(files={"vasprun.xml": VASP / "vasprun_C2_unconverged.xml"}),
        FakeRunner(files={"vasprun.xml": VASP / "vasprun_C2_static.xml"}),
    )
    labeler = get_labeler(
        "vasp",
        potcar_spec=True,
        max_scf_steps=60,
        mixing=0.4,
        smearing=0.05,
        retry_policy=RetryPolicy(physics_keys=("smearing",) if opted_in else ()),
        executor=Executor(command=fake_executable(tmp_path, "vasp_std"), runner=runner),
    )
    result = labeler.label(c2_diamond_for_fixture(), workdir=tmp_path / "calc")
    assert isinstance(result, LabelResult), result
    assert [a.status for a in result.attempts] == ["scf_unconverged", "scf_unconverged", "ok"]
    first, second, third = runner.incars
    sigma = 0.1 if opted_in else 0.05
    assert (first["NELM"], first["AMIX"], first["SIGMA"]) == (60, 0.4, 0.05)
    assert (second["NELM"], second["AMIX"], second["SIGMA"]) == (120, 0.2, 0.05)  # numerics only
    assert (third["NELM"], third["AMIX"], third["SIGMA"]) == (240, 0.1, sigma)
    assert result.attempts[1].settings_changes == {"max_scf_steps": 120, "mixing": 0.2}
    assert result.attempts[2].settings_changes == {
        "max_scf_steps": 240,
        "mixing": 0.1,
        **({"smearing": 0.1} if opted_in else {}),
    }
    assert result.settings["smearing"] == sigma  # the label keeps the settings that produced it
    assert (result.effective_settings_hash != labeler.settings_hash) is True


def test_without_potcars_the_preflight_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymatgen.core import SETTINGS

    monkeypatch.setitem(SETTINGS, "PMG_VASP_PSP_DIR", None)
    labeler = get_labeler(
        "vasp",
        executor=Executor(command=fake_executable(tmp_path, "vasp_std"), runner=FakeRunner()),
    )
    outcome = labeler.label(c2_diamond_for_fixture())
    assert outcome.kind is FailureKind.INVALID_INPUT and "POTCAR" in outcome.message
