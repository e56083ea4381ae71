"""Quantum ESPRESSO backend: the parser on committed pw.x output, input generation, and real
pw.x runs (marked ``qe``; skipped without pw.x, failing instead in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.units import Bohr, Ry

from dft_adapters import Executor, FailureKind, LabelResult, RetryPolicy, get_labeler
from dft_adapters.espresso import find_pseudopotential

from .conftest import (
    FIXTURES,
    QE_PSEUDO_DIR,
    FakeRunner,
    fake_executable,
    require_pw_x,
    si2,
    too_close,
)

QE_FAST = {"ecutwfc": 20, "kpts": (3, 3, 3), "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}


def test_parser_converts_pw_x_output_to_ev_angstrom(tmp_path: Path, qe_pseudo_dir: str) -> None:
    """Numbers read by hand from Si2_converged.pwo (Ry, Ry/bohr, Ry/bohr^3) converted here."""
    runner = FakeRunner(stdout=FIXTURES / "espresso/Si2_converged.pwo")
    labeler = get_labeler(
        "espresso",
        pseudo_dir=qe_pseudo_dir,
        ecutwfc=20,
        kpts=(3, 3, 3),
        executor=Executor(command=fake_executable(tmp_path, "pw.x"), runner=runner),
    )
    result = labeler.label(si2(), workdir=tmp_path / "calc")
    assert isinstance(result, LabelResult), result
    # "!    total energy"; ASE's reader converts with CODATA-2006 Ry (1.7e-5 eV apart here)
    assert result.energy == pytest.approx(-15.68722630 * Ry, abs=5e-5)
    np.testing.assert_allclose(
        result.forces,
        [[0.02543495, 0.04319345, -0.05480606], [-0.02543495, -0.04319345, 0.05480606]]
        * np.array(Ry / Bohr),
        atol=1e-6,
    )
    # QE prints the pressure-positive tensor; ASE's stress is its negative, Voigt xx yy zz yz xz xy
    qe = (
        np.array(
            [
                [0.00032464, 0.00028045, -0.00021432],
                [0.00028045, 0.00030618, -0.00010499],
                [-0.00021432, -0.00010499, 0.00028768],
            ]
        )
        * Ry
        / Bohr**3
    )
    np.testing.assert_allclose(
        result.stress, -qe[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=1e-5
    )
    assert result.code_version == "pw.x 6.7MaX"
    assert runner.calls[0][-2:] == ["-in", "espresso.pwi"]


def test_command_and_launcher_come_from_the_executor(tmp_path: Path, qe_pseudo_dir: str) -> None:
    runner = FakeRunner(stdout=FIXTURES / "espresso/Si2_converged.pwo")
    launcher = fake_executable(tmp_path, "srun")
    pw = fake_executable(tmp_path, "pw.x")
    ex = Executor(
        command=f"{pw} -nk 2",
        launcher=f"{launcher} -n 4",
        runner=runner,
        env={"OMP_NUM_THREADS": "1"},
    )
    labeler = get_labeler(
        "espresso", pseudo_dir=qe_pseudo_dir, executor=ex, **{**QE_FAST, "pseudopotentials": {}}
    )
    assert labeler.label(si2(), workdir=tmp_path / "c").ok
    assert runner.calls == [[launcher, "-n", "4", pw, "-nk", "2", "-in", "espresso.pwi"]]


def test_input_file_carries_settings(tmp_path: Path, qe_pseudo_dir: str) -> None:
    runner = FakeRunner(stdout=FIXTURES / "espresso/Si2_converged.pwo")
    labeler = get_labeler(
        "espresso",
        pseudo_dir=qe_pseudo_dir,
        ecutwfc=25,
        kpoint_density=2.0,
        smearing=0.2,
        max_scf_steps=7,
        mixing=0.3,
        input_data={"nbnd": 12, "electrons": {"startingwfc": "random"}, "conv_thr": 1e-9},
        executor=Executor(command=fake_executable(tmp_path, "pw.x"), runner=runner),
    )
    result = labeler.label(si2(), workdir=tmp_path / "c")
    text = (Path(result.workdir) / "espresso.pwi").read_text()
    for line in (
        "tprnfor          = .true.",
        "tstress          = .true.",
        "ecutwfc          = 25",
        "electron_maxstep = 7",
        "mixing_beta      = 0.3",
        "smearing         = 'mv'",
        f"degauss          = {0.2 / Ry}",
        "Si 28.085 Si.pbe-rrkj.UPF",
        "5 5 5  0 0 0",
        "nbnd             = 12",
        "startingwfc      = 'random'",
        "conv_thr         = 1e-09",
    ):
        assert line in text, line
    assert text.count("conv_thr") == 1  # input_data overrides, never duplicates
    assert result.settings["kpts"] == [5, 5, 5]  # 2.0 points per Å^-1 on a 3.84 Å fcc cell
    assert result.settings["pseudopotentials"] == {"Si": "Si.pbe-rrkj.UPF"}


@pytest.mark.skipif(not QE_PSEUDO_DIR.is_dir(), reason="QE pseudopotential directory absent")
def test_pseudopotential_picked_by_element_and_functional() -> None:
    assert find_pseudopotential("Si", QE_PSEUDO_DIR, "pbe") == "Si.pbe-rrkj.UPF"
    assert find_pseudopotential("O", QE_PSEUDO_DIR, "pbe") == "O.pbe-kjpaw.UPF"
    assert find_pseudopotential("S", QE_PSEUDO_DIR, "pbe") is None  # no "Si" file for sulphur
    assert find_pseudopotential("Pt", QE_PSEUDO_DIR, "pbe") is None  # only fully relativistic
    assert find_pseudopotential("Al", QE_PSEUDO_DIR, "pz") == "Al.pz-vbc.UPF"


def test_element_without_pseudopotential_fails_before_pw_x(
    tmp_path: Path, qe_pseudo_dir: str
) -> None:
    runner = FakeRunner()
    labeler = get_labeler(
        "espresso",
        pseudo_dir=qe_pseudo_dir,
        executor=Executor(command=fake_executable(tmp_path, "pw.x"), runner=runner),
    )
    atoms = si2()
    atoms[1].symbol = "Na"
    outcome = labeler.label(atoms)
    assert outcome.kind is FailureKind.INVALID_INPUT
    assert "Na" in outcome.message and qe_pseudo_dir in outcome.message
    assert runner.calls == []


def test_molecule_without_cell_is_invalid_input(tmp_path: Path, qe_pseudo_dir: str) -> None:
    from ase.build import molecule

    labeler = get_labeler("espresso", pseudo_dir=qe_pseudo_dir)
    outcome = labeler.label(molecule("SiH4"))
    assert outcome.kind is FailureKind.INVALID_INPUT and "cell" in outcome.message


# ------------------------------------------------------------------------- real pw.x
@pytest.mark.qe
def test_real_pw_x_unconverged_then_retry_policy_converges(tmp_path: Path) -> None:
    require_pw_x()
    atoms = si2()
    strict = get_labeler(
        "espresso", max_scf_steps=3, retry_policy=RetryPolicy.no_retries(), **QE_FAST
    )
    failed = strict.label(atoms, workdir=tmp_path / "strict")
    assert failed.kind is FailureKind.SCF_UNCONVERGED
    assert "convergence NOT achieved after   3 iterations" in failed.message
    assert failed.code_version is None or failed.code_version.startswith("pw.x")
    assert (Path(failed.workdir) / "espresso.pwo").is_file()

    retrying = get_labeler(
        "espresso", max_scf_steps=3, retry_policy=RetryPolicy(scf_retries=3), **QE_FAST
    )
    result = retrying.label(atoms, workdir=tmp_path / "retry")
    assert isinstance(result, LabelResult), result
    statuses = [a.status for a in result.attempts]
    assert statuses[0] == "scf_unconverged" and statuses[-1] == "ok"
    assert result.attempts[1].settings_changes["max_scf_steps"] == 6
    assert result.attempts[1].settings_changes["mixing"] == pytest.approx(0.35)
    assert (
        result.settings_hash == retrying.settings_hash
    )  # the requested settings identify the label
    assert result.settings["max_scf_steps"] > 3
    # the label is the converged answer for the settings it reports: rerun those directly
    used = {k: result.settings[k] for k in ("ecutwfc", "kpts", "smearing", "pseudopotentials")}
    reference = get_labeler("espresso", **used).label(atoms)
    assert isinstance(reference, LabelResult)
    assert abs(result.energy - reference.energy) < 1e-4
    np.testing.assert_allclose(result.forces, reference.forces, atol=1e-3)
    assert result.effective_settings_hash != result.settings_hash  # settings changed on retry
    kept = sorted(p.name for p in (tmp_path / "retry").glob("attempt-*"))
    assert (
        kept[0] == "attempt-0.failed-scf_unconverged" and kept[-1] == f"attempt-{len(statuses) - 1}"
    )


@pytest.mark.qe
def test_real_pw_x_bad_inputs_fail_before_running(tmp_path: Path) -> None:
    require_pw_x()
    labeler = get_labeler("espresso", **QE_FAST)
    close = labeler.label(too_close(si2()), workdir=tmp_path / "a")
    assert close.kind is FailureKind.INVALID_INPUT and "0.100 Å" in close.message
    assert not (tmp_path / "a").exists()  # no scratch directory: pw.x never started
    missing = get_labeler("espresso", executor=Executor(command="pw.x.not.installed"), **QE_FAST)
    outcome = missing.label(si2())
    assert (
        outcome.kind is FailureKind.MISSING_EXECUTABLE and "pw.x.not.installed" in outcome.message
    )


@pytest.mark.qe
def test_real_pw_x_timeout_kills_the_run(tmp_path: Path) -> None:
    require_pw_x()
    labeler = get_labeler(
        "espresso",
        executor=Executor(timeout=0.3),
        retry_policy=RetryPolicy.no_retries(),
        ecutwfc=40,
        kpts=(8, 8, 8),
        pseudopotentials={"Si": "Si.pbe-rrkj.UPF"},
    )
    outcome = labeler.label(si2(), workdir=tmp_path)
    assert outcome.kind is FailureKind.TIMEOUT and outcome.wall_time < 10
