"""The shared contract every backend runs: shapes and units of energy/forces/stress, forces equal
to finite differences of the backend's own energy, the caller's Atoms left untouched, and
exactly-once labelling of a work directory (success and final failure are re-read, never rerun).

Real codes: EMT/LJ/Morse, Quantum ESPRESSO (pw.x, Si2) and PySCF (H2O). VASP and CP2K run the
same contract on committed output files, with only the process execution faked. Failures come
from fault injection (mocks), a real unconverged SCF (PySCF) or committed failed outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from dft_adapters import (
    Executor,
    FailureKind,
    Labeler,
    LabelError,
    LabelFailure,
    LabelResult,
    RetryPolicy,
    get_labeler,
)
from dft_adapters.mock import FaultInjection

from .conftest import (
    FIXTURES,
    FakeRunner,
    c2_diamond_for_fixture,
    cp2k_stub_data,
    cu4,
    energy_of,
    fake_executable,
    fd_forces,
    fd_stress,
    h2o,
    require_pw_x,
    si2,
)

QE_FAST = {
    "ecutwfc": 20,
    "kpts": (3, 3, 3),
    "conv_thr": 1e-10,
    "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},
}


@dataclass
class Case:
    """One backend under the contract."""

    make: Callable[[Path], Labeler]
    atoms: Callable[[], Atoms]
    energy_range: tuple[float, float]  # eV per atom: catches Ry/Hartree-vs-eV mistakes
    fd: tuple[tuple[tuple[int, int], ...], float, float] | None  # components, step (Å), tol (eV/Å)
    fd_stress: tuple[tuple[int, ...], float, float] | None = None  # Voigt comps, strain step, tol
    needs: Callable[[], None] | None = None
    marks: tuple = ()
    failing: Callable[[Path], Labeler] | None = None  # a labeler whose every attempt fails


def _fault(name: str, kind: FailureKind, **settings: object) -> Callable[[Path], Labeler]:
    return lambda _: get_labeler(name, faults=FaultInjection({kind: 1.0}), **settings)


def _fake_file_backend(name: str, runner: FakeRunner, **settings: object) -> Callable:
    def make(tmp: Path) -> Labeler:
        exe = fake_executable(tmp / "bin", {"vasp": "vasp_std"}.get(name, name))
        return get_labeler(name, executor=Executor(command=exe, runner=runner), **settings)

    return make


def _dummy_pseudo_dir(tmp: Path) -> str:
    (tmp / "pseudo").mkdir(exist_ok=True)
    (tmp / "pseudo" / "Si.pbe-rrkj.UPF").write_text("dummy: the fake runner never reads it\n")
    return str(tmp / "pseudo")


def _espresso_unconverged(tmp: Path) -> Labeler:
    runner = FakeRunner(stdout=FIXTURES / "espresso/Si2_unconverged.pwo", returncode=2)
    make = _fake_file_backend("espresso", runner, ecutwfc=20, pseudo_dir=_dummy_pseudo_dir(tmp))
    return make(tmp)


def _vasp(tmp: Path) -> Labeler:
    runner = FakeRunner(
        stdout="running on 1 node\n", files={"vasprun.xml": FIXTURES / "vasp/vasprun_C2_static.xml"}
    )
    return get_labeler(
        "vasp",
        potcar_spec=True,
        executor=Executor(command=fake_executable(tmp / "bin", "vasp_std"), runner=runner),
    )


def _cp2k(tmp: Path) -> Labeler:
    runner = FakeRunner(files={"cp2k.out": FIXTURES / "cp2k/Si2_converged.out"})
    return get_labeler(
        "cp2k",
        basis_set="SZV-MOLOPT-SR-GTH",
        cutoff=200,
        data_dir=cp2k_stub_data(tmp / "cp2k-data"),
        executor=Executor(command=fake_executable(tmp / "bin", "cp2k"), runner=runner),
    )


CASES = {
    "emt": Case(
        lambda _: get_labeler("emt"),
        cu4,
        (-1.0, 1.0),
        ((((0, 0), (1, 2), (3, 1))), 1e-4, 1e-5),
        ((0, 1, 2, 3, 4, 5), 1e-5, 1e-5),
        failing=_fault("emt", FailureKind.SCF_UNCONVERGED),
    ),
    "lj": Case(
        lambda _: get_labeler("lj", sigma=2.3, epsilon=0.1),
        lambda: cu4().copy(),
        (-5.0, 5.0),
        ((((0, 0), (2, 1))), 1e-4, 1e-5),
        ((0, 3), 1e-5, 1e-5),
        failing=_fault("lj", FailureKind.CRASHED, sigma=2.3, epsilon=0.1),
    ),
    "morse": Case(
        lambda _: get_labeler("morse", r0=2.55),
        cu4,
        (-10.0, 0.0),
        ((((1, 0), (2, 2))), 1e-4, 1e-5),
        ((1, 5), 1e-5, 1e-5),
        failing=_fault("morse", FailureKind.TIMEOUT, r0=2.55),
    ),
    "espresso": Case(
        lambda _: get_labeler("espresso", **QE_FAST),
        si2,
        (-110.0, -100.0),
        # measured: FD error 2.5e-4 eV/Å at h=5e-3 (truncation, ~h^2); shear stress 1e-4 eV/Å^3.
        # Diagonal stress is off by ~1e-3 eV/Å^3 at 20 Ry: Pulay stress of a fixed-cutoff
        # basis (isotropic, so it does not touch the shear components tested here).
        ((((0, 0), (1, 2))), 2e-3, 5e-4),
        ((3, 5), 2e-3, 5e-4),
        needs=require_pw_x,
        marks=(pytest.mark.qe,),
        failing=_espresso_unconverged,
    ),
    # PBE on a finite DFT grid without grid response: FD differs by ~2e-4 eV/Å (measured)
    "pyscf": Case(
        lambda _: get_labeler("pyscf", basis="6-31g", xc="pbe"),
        h2o,
        (-800.0, -600.0),
        ((((0, 2), (1, 1))), 1e-3, 5e-4),
        failing=lambda _: get_labeler(
            "pyscf",
            basis="6-31g",
            xc="pbe",
            max_scf_steps=1,
            retry_policy=RetryPolicy(scf_retries=1),
        ),
    ),
    "vasp": Case(
        _vasp,
        c2_diamond_for_fixture,
        (-11.0, -9.0),
        None,
        failing=_fake_file_backend(
            "vasp",
            FakeRunner(files={"vasprun.xml": FIXTURES / "vasp/vasprun_C2_unconverged.xml"}),
            potcar_spec=True,
        ),
    ),
    "cp2k": Case(
        _cp2k,
        si2,
        (-100.0, -90.0),
        None,
        failing=lambda tmp: _fake_file_backend(
            "cp2k",
            FakeRunner(files={"cp2k.out": FIXTURES / "cp2k/Si2_unconverged.out"}),
            basis_set="SZV-MOLOPT-SR-GTH",
            data_dir=cp2k_stub_data(tmp / "cp2k-data"),
        )(tmp),
    ),
}


def _cases(keep: Callable[[Case], bool] = lambda c: True) -> list:
    return [pytest.param(c, id=name, marks=c.marks) for name, c in CASES.items() if keep(c)]


def _ready(c: Case) -> Case:
    if c.needs:
        c.needs()
    return c


@pytest.fixture(params=_cases())
def case(request: pytest.FixtureRequest) -> Case:
    return _ready(request.param)


@pytest.fixture(params=_cases(lambda c: c.fd is not None))
def fd_case(request: pytest.FixtureRequest) -> Case:
    return _ready(request.param)


@pytest.fixture(params=_cases(lambda c: c.fd_stress is not None))
def stress_case(request: pytest.FixtureRequest) -> Case:
    return _ready(request.param)


def test_every_registered_builtin_backend_is_under_contract() -> None:
    from dft_adapters import available_labelers

    assert set(available_labelers()) == set(CASES)


def test_shapes_units_and_provenance(case: Case, tmp_path: Path) -> None:
    labeler = case.make(tmp_path)
    atoms = case.atoms()
    result = labeler.label(atoms, workdir=tmp_path / "calc")
    assert isinstance(result, LabelResult), result
    assert result.ok and result.status == "ok"
    n = len(atoms)
    assert isinstance(result.energy, float)
    lo, hi = case.energy_range
    assert lo < result.energy / n < hi
    assert result.forces.shape == (n, 3) and result.forces.dtype == np.float64
    assert np.all(np.isfinite(result.forces))
    if atoms.pbc.all():
        assert result.stress is not None and result.stress.shape == (6,)
        assert np.all(np.isfinite(result.stress))
        assert np.abs(result.stress).max() < 1.0  # eV/Å^3: 1 eV/Å^3 = 160 GPa; kBar would be larger
    else:
        assert result.stress is None
    assert result.labeler == labeler.name
    assert result.settings_hash == labeler.settings_hash and len(result.settings_hash) == 64
    assert result.code_version and result.host
    assert result.wall_time > 0
    assert len(result.attempts) == 1 and result.attempts[0].ok
    if labeler.uses_scratch:
        assert result.workdir is not None and Path(result.workdir).is_dir()
        assert Path(result.workdir).parent == (tmp_path / "calc").resolve()


def test_input_atoms_are_not_mutated(case: Case, tmp_path: Path) -> None:
    labeler = case.make(tmp_path)
    atoms = case.atoms()
    atoms.info["tag"] = {"nested": [1, 2]}
    atoms.set_constraint(FixAtoms(indices=[0]))
    marker = SinglePointCalculator(atoms, energy=123.0)
    atoms.calc = marker
    before = atoms.copy()
    labeler.label(atoms, workdir=tmp_path / "calc")
    assert atoms.calc is marker and atoms.calc.results["energy"] == 123.0
    assert np.array_equal(atoms.positions, before.positions)
    assert np.array_equal(atoms.numbers, before.numbers)
    assert np.array_equal(atoms.cell.array, before.cell.array)
    assert np.array_equal(atoms.pbc, before.pbc)
    assert atoms.info == before.info
    assert set(atoms.arrays) == set(before.arrays)
    assert len(atoms.constraints) == 1 and list(atoms.constraints[0].index) == [0]


def test_forces_are_minus_the_gradient_of_the_energy(fd_case: Case, tmp_path: Path) -> None:
    case = fd_case
    assert case.fd is not None
    components, h, tol = case.fd
    labeler = case.make(tmp_path)
    atoms = case.atoms()
    result = labeler.label(atoms)
    assert isinstance(result, LabelResult), result
    numeric = fd_forces(energy_of(labeler), atoms, components, h)
    analytic = np.array([result.forces[i, k] for i, k in components])
    assert np.abs(analytic).max() > 10 * tol  # the check is not trivially satisfied by zeros
    np.testing.assert_allclose(analytic, numeric, atol=tol, rtol=0)


def test_stress_is_the_strain_derivative_of_the_energy(stress_case: Case, tmp_path: Path) -> None:
    case = stress_case
    assert case.fd_stress is not None
    voigt, h, tol = case.fd_stress
    labeler = case.make(tmp_path)
    atoms = case.atoms()
    result = labeler.label(atoms)
    assert isinstance(result, LabelResult) and result.stress is not None
    numeric = np.array([fd_stress(energy_of(labeler), atoms, v, h) for v in voigt])
    np.testing.assert_allclose(result.stress[list(voigt)], numeric, atol=tol, rtol=0)


# ----------------------------------------------------------------------------- exactly once
def _count_runs(labeler: Labeler) -> list[int]:
    """Record every attempt the labeler runs (wraps its ``_compute``; the code still runs)."""
    runs: list[int] = []
    compute = labeler._compute

    def counting(atoms, settings, directory, attempt):
        runs.append(attempt)
        return compute(atoms, settings, directory, attempt)

    labeler._compute = counting  # type: ignore[method-assign]
    return runs


def _process_calls(labeler: Labeler) -> list | None:
    runner = labeler.executor.runner
    return runner.calls if isinstance(runner, FakeRunner) else None


def _same_return(first, again) -> None:
    """``again`` is ``first`` re-read: every field equal, arrays bit for bit, only ``reused``
    differs."""
    assert not first.reused and again.reused and first.persisted and again.persisted
    a, b = first.to_dict(), again.to_dict()
    a.pop("reused"), b.pop("reused")
    assert a == b
    if isinstance(first, LabelResult):
        assert type(again.energy) is float and again.energy == first.energy
        assert again.forces.dtype == np.float64
        assert again.forces.tobytes() == first.forces.tobytes()
        assert (again.stress is None) is (first.stress is None)
        if first.stress is not None:
            assert again.stress.tobytes() == first.stress.tobytes()


def test_a_workdir_is_labelled_once(case: Case, tmp_path: Path) -> None:
    labeler = case.make(tmp_path)
    runs, calls = _count_runs(labeler), _process_calls(labeler)
    workdir = tmp_path / "calc"
    first = labeler.label(case.atoms(), workdir=workdir)
    assert isinstance(first, LabelResult), first
    assert runs == [0] and (calls is None or len(calls) == 1)
    assert (workdir / "outcome.json").is_file()

    again = labeler.label(case.atoms(), workdir=workdir)
    assert runs == [0] and (calls is None or len(calls) == 1)  # nothing ran the second time
    _same_return(first, again)
    fresh = case.make(tmp_path)  # another labeler object (another worker) with the same settings
    fresh_runs = _count_runs(fresh)
    _same_return(first, fresh.label(case.atoms(), workdir=str(workdir)))
    assert fresh_runs == []


def test_a_final_failure_is_labelled_once(case: Case, tmp_path: Path) -> None:
    assert case.failing is not None
    labeler = case.failing(tmp_path)
    runs, calls = _count_runs(labeler), _process_calls(labeler)
    workdir = tmp_path / "calc"
    first = labeler.label(case.atoms(), workdir=workdir)
    assert isinstance(first, LabelFailure), first
    n = len(runs)
    assert n == len(first.attempts) >= 1 and (calls is None or len(calls) == n)

    again = labeler.label(case.atoms(), workdir=workdir)
    assert len(runs) == n and (calls is None or len(calls) == n)  # the retry policy not rerun
    _same_return(first, again)
    assert again.kind is first.kind and again.message == first.message


# --------------------------------------------------------------------------- who sets what
OPERATOR_FIELDS = {"espresso": {"pseudo_dir"}, "cp2k": {"data_dir"}}
"""Server paths of each backend: only the operator (execution profile) sets them."""

AUTHOR_REFUSED = [
    ("espresso", {"input_data": {"control": {"outdir": "/srv"}}}, "input_data.control.outdir"),
    ("espresso", {"input_data": {"wfcdir": "x"}}, "input_data.wfcdir"),
    ("espresso", {"input_data": {"CONTROL": {"Pseudo_Dir": "x"}}}, "input_data.CONTROL"),
    ("espresso", {"input_data": {"system": {"input_dft": "pbe'\n"}}}, "input_data.system"),
    ("espresso", {"pseudopotentials": {"Si": "/etc/passwd"}}, "pseudopotentials.Si"),
    ("espresso", {"pseudopotentials": {"Si": "..upf"}}, "pseudopotentials.Si"),
    ("cp2k", {"inp": "@INCLUDE '/etc/passwd'"}, "inp: line 1"),
    ("cp2k", {"inp": "&GLOBAL\n  @IF 1\n&END"}, "inp: line 2"),
    ("cp2k", {"inp": "&DFT\n  BASIS_SET_FILE_NAME /x\n&END"}, "BASIS_SET_FILE_NAME"),
    ("cp2k", {"inp": "&GLOBAL\n  PROJECT ../../x\n&END"}, "PROJECT"),
    ("cp2k", {"inp": "&EXT_RESTART\n&END"}, "&EXT_RESTART"),
    ("cp2k", {"inp": "&GLOBAL\n  PRINT_LEVEL ${X}\n&END"}, "inp: '$'"),
    ("cp2k", {"basis_set_file": "../BASIS"}, "basis_set_file"),
    ("cp2k", {"basis_set": "DZVP\n@INCLUDE x"}, "basis_set"),
    ("vasp", {"potcar": {"Si": "../Si"}}, "potcar.Si"),
    ("vasp", {"input_set": "batch_write_input"}, "input_set"),
    ("vasp", {"incar": {"EN CUT": 1}}, "incar.EN CUT"),
    ("pyscf", {"basis": "/tmp/basis.nw"}, "basis"),
    ("pyscf", {"pseudo": "pesflow.sqlite"}, "pseudo"),
]


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_fields_are_marked_and_refused_from_authors(name: str) -> None:
    from dft_adapters import labeler_class
    from dft_adapters.settings import AuthorSettingsError

    cls = labeler_class(name).settings_cls
    assert cls.operator_fields() == OPERATOR_FIELDS.get(name, set())
    assert {f.name for f in cls.author_fields()} | cls.operator_fields() == {
        f.name for f in dataclasses.fields(cls)
    }
    for field in cls.operator_fields():  # operator fields never enter the settings hash
        assert field not in cls().hashed_dict()
        with pytest.raises(AuthorSettingsError, match=f"^{field}: is an operator setting"):
            cls.check_author_settings({field: "/anywhere"})
    cls.check_author_settings(cls().hashed_dict())  # the defaults are fine from an author


@pytest.mark.parametrize("name, values, where", AUTHOR_REFUSED)
def test_free_form_author_settings_cannot_name_files(name, values, where) -> None:
    from dft_adapters import labeler_class
    from dft_adapters.settings import AuthorSettingsError

    with pytest.raises(AuthorSettingsError) as exc:
        labeler_class(name).settings_cls.check_author_settings(values)
    assert where in str(exc.value) and "\n" not in str(exc.value)


def test_ordinary_author_settings_pass() -> None:
    from dft_adapters import labeler_class

    labeler_class("espresso").settings_cls.check_author_settings(
        {
            "ecutwfc": 30,
            "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},
            "input_data": {"system": {"nspin": 2, "starting_magnetization(1)": 0.5}},
        }
    )
    labeler_class("cp2k").settings_cls.check_author_settings(
        {"inp": "&FORCE_EVAL\n  &DFT\n    &QS\n      EPS_DEFAULT 1e-12\n    &END QS\n  &END\n&END"}
    )
    labeler_class("vasp").settings_cls.check_author_settings(
        {"potcar": {"Fe": "Fe_pv"}, "incar": {"MAGMOM": [5, 5], "ALGO": "Fast"}}
    )
    labeler_class("pyscf").settings_cls.check_author_settings(
        {"basis": "6-311++g(d,p)", "pseudo": "gth-pade"}
    )


def test_vasp_input_set_is_only_an_input_set_class() -> None:
    from dft_adapters.vasp import VaspSettings

    labeler = get_labeler("vasp", potcar_spec=True)
    with pytest.raises(LabelError, match="unknown pymatgen input set"):
        labeler.input_set(si2(), VaspSettings(input_set="batch_write_input"))
