"""Failures are values: every failure kind is fed through each backend's error path and comes
back as a typed :class:`LabelFailure` with the code's own message — never an exception.

File-based codes (QE, VASP, CP2K) get the outputs their real runs leave (committed files) from a
fake process runner; PySCF fails for real where it can; the mock through fault injection.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ase import Atoms

from dft_adapters import Executor, FailureKind, LabelFailure, RetryPolicy, get_labeler
from dft_adapters.mock import FaultInjection

from .conftest import (
    FIXTURES,
    FakeRunner,
    c2_diamond_for_fixture,
    cp2k_stub_data,
    cu4,
    fake_executable,
    future_layout,
    h2o,
    si2,
    too_close,
)

K = FailureKind
NO_RETRY = RetryPolicy.no_retries()


def _file_backend(
    name: str,
    atoms: Callable[[], Atoms],
    runner: FakeRunner,
    tmp: Path,
    kind: FailureKind,
    **settings: Any,
) -> tuple[Any, Atoms, FakeRunner]:
    command = (
        f"no-such-{name}-binary"
        if kind is K.MISSING_EXECUTABLE
        else fake_executable(tmp / "bin", name)
    )
    extra = {"potcar_spec": True} if name == "vasp" else {}
    labeler = get_labeler(
        name,
        executor=Executor(command=command, runner=runner, timeout=5.0),
        retry_policy=NO_RETRY,
        **extra,
        **settings,
    )
    structure = too_close(atoms()) if kind is K.INVALID_INPUT else atoms()
    return labeler, structure, runner


def espresso_case(kind: FailureKind, tmp: Path, pseudo_dir: str) -> tuple[Any, Atoms, FakeRunner]:
    d = FIXTURES / "espresso"
    runner = {
        K.SCF_UNCONVERGED: FakeRunner(stdout=d / "Si2_unconverged.pwo", returncode=2),
        K.CRASHED: FakeRunner(stdout=d / "Si2_missing_pseudo.pwo", returncode=1),
        K.TIMEOUT: FakeRunner(
            stdout="     Program PWSCF v.6.7MaX starts\n", returncode=-15, timed_out=True
        ),
        K.UNPARSABLE_OUTPUT: FakeRunner(stdout=future_layout("espresso")),
    }.get(kind, FakeRunner(stdout=d / "Si2_converged.pwo"))
    return _file_backend("espresso", si2, runner, tmp, kind, pseudo_dir=pseudo_dir, ecutwfc=20)


def vasp_case(kind: FailureKind, tmp: Path, _: str) -> tuple[Any, Atoms, FakeRunner]:
    d = FIXTURES / "vasp"
    runner = {
        K.SCF_UNCONVERGED: FakeRunner(files={"vasprun.xml": d / "vasprun_C2_unconverged.xml"}),
        K.CRASHED: FakeRunner(files={"vasprun.xml": d / "vasprun_C2_truncated.xml"}),
        K.TIMEOUT: FakeRunner(returncode=-15, timed_out=True),
        K.UNPARSABLE_OUTPUT: FakeRunner(files={"vasprun.xml": future_layout("vasp")}),
    }.get(kind, FakeRunner(files={"vasprun.xml": d / "vasprun_C2_static.xml"}))
    return _file_backend("vasp", c2_diamond_for_fixture, runner, tmp, kind)


def cp2k_case(kind: FailureKind, tmp: Path, _: str) -> tuple[Any, Atoms, FakeRunner]:
    d = FIXTURES / "cp2k"
    runner = {
        K.SCF_UNCONVERGED: FakeRunner(files={"cp2k.out": d / "Si2_unconverged.out"}),
        K.CRASHED: FakeRunner(files={"cp2k.out": d / "Si2_bad_basis.out"}, returncode=1),
        K.TIMEOUT: FakeRunner(returncode=-15, timed_out=True),
        K.UNPARSABLE_OUTPUT: FakeRunner(files={"cp2k.out": future_layout("cp2k")}),
    }.get(kind, FakeRunner(files={"cp2k.out": d / "Si2_converged.out"}))
    return _file_backend(
        "cp2k",
        si2,
        runner,
        tmp,
        kind,
        basis_set="SZV-MOLOPT-SR-GTH",
        data_dir=cp2k_stub_data(tmp / "data"),
    )


def mock_case(kind: FailureKind, tmp: Path, _: str) -> tuple[Any, Atoms, None]:
    labeler = get_labeler("emt", faults=FaultInjection({kind: 1.0}), retry_policy=NO_RETRY)
    return labeler, cu4(), None


EXPECTED_MESSAGE = {
    ("espresso", K.SCF_UNCONVERGED): "convergence NOT achieved after   3 iterations",
    (
        "espresso",
        K.CRASHED,
    ): "Error in routine readpp (1): file /usr/share/espresso/pseudo/Si.nonexist.UPF not found",
    ("espresso", K.TIMEOUT): "killed after the 5.0 s limit",
    ("vasp", K.SCF_UNCONVERGED): "9 steps reached NELM = 9",
    ("vasp", K.CRASHED): "vasprun.xml is truncated",
    ("vasp", K.TIMEOUT): "killed after the 5.0 s limit",
    ("cp2k", K.SCF_UNCONVERGED): "SCF run NOT converged",
    ("cp2k", K.CRASHED): "The requested basis set <NOPE-BASIS> for element <Si> was not found",
    ("cp2k", K.TIMEOUT): "killed after the 5.0 s limit",
    ("espresso", K.UNPARSABLE_OUTPUT): "pw.x 6.7MaX",
    ("vasp", K.UNPARSABLE_OUTPUT): "vasp 6.3.0",
    ("cp2k", K.UNPARSABLE_OUTPUT): "CP2K version 2023.1",
}

CODE_VERSION = {"espresso": "pw.x 6.7MaX", "vasp": "vasp 6.3.0", "cp2k": "CP2K version 2023.1"}

BACKENDS = {"espresso": espresso_case, "vasp": vasp_case, "cp2k": cp2k_case, "emt": mock_case}


@pytest.mark.parametrize("kind", list(FailureKind), ids=[k.value for k in FailureKind])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_failure_kind_is_a_value(
    backend: str, kind: FailureKind, tmp_path: Path, qe_pseudo_dir: str
) -> None:
    labeler, atoms, runner = BACKENDS[backend](kind, tmp_path, qe_pseudo_dir)
    outcome = labeler.label(atoms, workdir=tmp_path / "calc")
    assert isinstance(outcome, LabelFailure), outcome
    assert not outcome.ok and outcome.kind is kind and outcome.status == kind.value
    assert outcome.message
    if (backend, kind) in EXPECTED_MESSAGE:
        assert EXPECTED_MESSAGE[(backend, kind)] in outcome.message
    assert outcome.settings_hash == labeler.settings_hash
    if kind in (K.SCF_UNCONVERGED, K.UNPARSABLE_OUTPUT) and backend in CODE_VERSION:
        assert outcome.code_version == CODE_VERSION[backend]  # read from the failed run's output
    if runner is None:
        return
    pre_flight = kind in (K.INVALID_INPUT, K.MISSING_EXECUTABLE)
    assert (runner.calls == []) is pre_flight  # bad input never reaches the process
    if pre_flight:
        assert outcome.attempts == () and outcome.workdir is None
    else:
        kept = Path(outcome.workdir)
        assert kept.is_dir() and kept.name == f"attempt-0.failed-{kind.value}"
        assert len(outcome.attempts) == 1 and outcome.attempts[0].status == kind.value


def test_vasp_crash_with_nonzero_exit_reports_the_code_output(tmp_path: Path) -> None:
    runner = FakeRunner(stdout="VERY BAD NEWS! internal error in subroutine SGRCON\n", returncode=1)
    labeler = get_labeler(
        "vasp",
        potcar_spec=True,
        retry_policy=NO_RETRY,
        executor=Executor(command=fake_executable(tmp_path, "vasp_std"), runner=runner),
    )
    outcome = labeler.label(c2_diamond_for_fixture(), workdir=tmp_path / "calc")
    assert (
        outcome.kind is K.CRASHED and "SGRCON" in outcome.message and "status 1" in outcome.message
    )


def test_espresso_incomplete_output_with_exit_zero_is_crashed(
    tmp_path: Path, qe_pseudo_dir: str
) -> None:
    text = (FIXTURES / "espresso/Si2_converged.pwo").read_text()
    runner = FakeRunner(stdout=text[: len(text) // 2], returncode=0)
    labeler = get_labeler(
        "espresso",
        pseudo_dir=qe_pseudo_dir,
        retry_policy=NO_RETRY,
        executor=Executor(command=fake_executable(tmp_path, "pw.x"), runner=runner),
    )
    outcome = labeler.label(si2(), workdir=tmp_path / "calc")
    assert outcome.kind is K.CRASHED and "incomplete" in outcome.message


def test_runner_raising_file_not_found_is_missing_executable(
    tmp_path: Path, qe_pseudo_dir: str
) -> None:
    """An executable that vanishes between the PATH check and the start is still a value."""
    runner = FakeRunner(missing=True)
    labeler = get_labeler(
        "espresso",
        pseudo_dir=qe_pseudo_dir,
        retry_policy=NO_RETRY,
        executor=Executor(command=fake_executable(tmp_path, "pw.x"), runner=runner),
    )
    outcome = labeler.label(si2(), workdir=tmp_path / "calc")
    assert outcome.kind is K.MISSING_EXECUTABLE and len(runner.calls) == 1


# ---------------------------------------------------------------- PySCF (in-process, real)
def test_pyscf_unconverged_is_a_value() -> None:
    labeler = get_labeler("pyscf", basis="6-31g", max_scf_steps=1, retry_policy=NO_RETRY)
    outcome = labeler.label(h2o())
    assert outcome.kind is K.SCF_UNCONVERGED and "not converged in 1 cycles" in outcome.message


def test_pyscf_timeout_is_a_value() -> None:
    labeler = get_labeler(
        "pyscf", basis="6-31g", executor=Executor(timeout=1e-6), retry_policy=NO_RETRY
    )
    outcome = labeler.label(h2o())
    assert outcome.kind is K.TIMEOUT and "exceeds the 1e-06 s limit" in outcome.message


def test_pyscf_crash_inside_the_scf_is_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process analogue of the process seam: the SCF driver itself blows up."""
    from dft_adapters.pyscf_backend import PySCFLabeler

    class Exploding:
        converged = False
        callback = None

        def kernel(self) -> float:
            raise MemoryError("cannot allocate ERI tensor")

    monkeypatch.setattr(PySCFLabeler, "_mean_field", lambda self, *a: Exploding())
    outcome = get_labeler("pyscf", basis="6-31g", retry_policy=NO_RETRY).label(h2o())
    assert (
        outcome.kind is K.CRASHED and "MemoryError: cannot allocate ERI tensor" in outcome.message
    )


def test_pyscf_bad_input_is_a_value() -> None:
    assert get_labeler("pyscf", basis="6-31g").label(too_close(h2o())).kind is K.INVALID_INPUT
    odd = get_labeler("pyscf", basis="6-31g", spin=1).label(h2o())
    assert odd.kind is K.INVALID_INPUT and "spin" in odd.message
    no_basis = get_labeler("pyscf", basis="sto-3g").label(
        Atoms("Og2", positions=[[0, 0, 0], [0, 0, 3]])
    )
    assert no_basis.kind is K.INVALID_INPUT and "Og" in no_basis.message


def test_pyscf_not_importable_is_missing_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    labeler = get_labeler("pyscf", basis="6-31g")
    monkeypatch.setitem(sys.modules, "pyscf", None)
    outcome = labeler.label(h2o())
    assert outcome.kind is K.MISSING_EXECUTABLE and "pyscf is not importable" in outcome.message
