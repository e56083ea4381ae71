"""CP2K backend: the parser on committed CP2K 2023.1 output, input generation, and one real
run checked against finite differences (5 labels, ~20 s on 2 cores; fails, not skips, in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.units import Bohr, GPa, Hartree

from dft_adapters import Executor, LabelResult, get_labeler
from dft_adapters.cp2k import parse_cp2k_output

from .conftest import (
    FIXTURES,
    FakeRunner,
    energy_of,
    fake_executable,
    fd_forces,
    fd_stress,
    require_cp2k,
    si2,
)

CP2K = FIXTURES / "cp2k"


def test_parser_reads_energy_forces_stress_in_ase_units() -> None:
    parsed = parse_cp2k_output((CP2K / "Si2_converged.out").read_text(), natoms=2)
    assert parsed["energy"] == pytest.approx(-7.081986342668626 * Hartree, abs=1e-9)
    np.testing.assert_allclose(
        parsed["forces"],
        np.array([[-0.03642564, -0.00107842, -0.01458956], [0.03642529, 0.00107843, 0.01458949]])
        * Hartree
        / Bohr,
    )
    gpa = np.array(
        [
            [6.50730912645e1, 2.79453814220, -6.51781688598e-2],
            [2.79453814220, 6.56849333469e1, 6.98304540960],
            [-6.51781688598e-2, 6.98304540960, 6.55866177421e1],
        ]
    )
    np.testing.assert_allclose(parsed["stress"], -gpa[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] * GPa)
    assert parsed["converged"] and parsed["complete"] and parsed["version"] == "CP2K version 2023.1"


def test_parser_sees_the_silent_non_convergence() -> None:
    """CP2K exits 0 and prints forces even when the SCF did not converge."""
    parsed = parse_cp2k_output((CP2K / "Si2_unconverged.out").read_text(), natoms=2)
    assert not parsed["converged"] and parsed["forces"].shape == (2, 3)


def test_parser_rejects_wrong_atom_count() -> None:
    with pytest.raises(ValueError, match="expected 3"):
        parse_cp2k_output((CP2K / "Si2_converged.out").read_text(), natoms=3)


def test_input_has_forces_stress_and_settings(tmp_path: Path, cp2k_data_dir: str) -> None:
    runner = FakeRunner(files={"cp2k.out": CP2K / "Si2_converged.out"})
    labeler = get_labeler(
        "cp2k",
        data_dir=cp2k_data_dir,
        basis_set="SZV-MOLOPT-SR-GTH",
        cutoff=250,
        smearing=0.1,
        kpts=(2, 2, 2),
        max_scf_steps=33,
        mixing=0.25,
        executor=Executor(command=fake_executable(tmp_path, "cp2k.psmp"), runner=runner),
    )
    result = labeler.label(si2(), workdir=tmp_path / "c")
    assert isinstance(result, LabelResult), result
    text = (Path(result.workdir) / "cp2k.inp").read_text()
    for line in (
        "RUN_TYPE ENERGY_FORCE",
        "STRESS_TENSOR ANALYTICAL",
        "MAX_SCF 33",
        "ALPHA 0.25",
        "CUTOFF 250",
        "SCHEME MONKHORST-PACK 2 2 2",
        "METHOD FERMI_DIRAC",
        "BASIS_SET SZV-MOLOPT-SR-GTH",
        "PERIODIC XYZ",
        "&FORCES ON",
    ):
        assert line in text, line
    assert runner.calls[0][-4:] == ["-i", "cp2k.inp", "-o", "cp2k.out"]


def test_unknown_basis_for_element_fails_before_running(tmp_path: Path, cp2k_data_dir: str) -> None:
    runner = FakeRunner()
    labeler = get_labeler(
        "cp2k",
        data_dir=cp2k_data_dir,
        basis_set="SZV-MOLOPT-SR-GTH",
        executor=Executor(command=fake_executable(tmp_path, "cp2k"), runner=runner),
    )
    atoms = si2()
    atoms[0].symbol = "Og"
    outcome = labeler.label(atoms)
    assert (
        outcome.kind.value == "invalid_input" and "for Og" in outcome.message and runner.calls == []
    )


def test_real_cp2k_si2_energy_forces_stress_against_finite_differences(tmp_path: Path) -> None:
    """Real ``cp2k`` (Debian 2023.1 here): a rattled Si2 cell, smeared, small basis and cutoff
    (3.6 s a label on 2 cores); forces and analytical stress against central differences of
    its own (free) energy. Measured: |ΔF| 0.002 eV/Å, |Δσ| 5e-4 eV/Å^3 on σ ≈ 0.42."""
    require_cp2k()
    labeler = get_labeler(
        "cp2k",
        basis_set="SZV-MOLOPT-SR-GTH",
        cutoff=150,
        rel_cutoff=30,
        smearing=0.1,
        eps_scf=1e-8,
    )
    atoms = si2()
    result = labeler.label(atoms, workdir=tmp_path)
    assert isinstance(result, LabelResult), result
    assert result.code_version.startswith("CP2K version") and result.stress is not None
    energy = energy_of(labeler)
    numeric = fd_forces(energy, atoms, [(0, 2)], 5e-3)
    assert abs(result.forces[0, 2]) > 0.5
    np.testing.assert_allclose(result.forces[0, 2], numeric[0], atol=0.02)
    shear = fd_stress(energy, atoms, 5, 2e-3)  # xy: non-zero only through the rattle
    assert abs(result.stress[5]) > 0.02
    np.testing.assert_allclose(result.stress[5], shear, atol=2e-3)
