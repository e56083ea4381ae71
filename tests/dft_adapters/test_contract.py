"""The shipped labeler contract (:func:`dft_adapters.contract.check_labeler`) over every
registered implementation (``available_labelers()``: built-ins and entry points), plus the
settings rules every backend shares (who may set what).

Real codes on tiny inputs: EMT/LJ/Morse, Quantum ESPRESSO (pw.x, Si2, 20 Ry), CP2K (H2 in a
4 Å box, SZV basis, 300 Ry) and PySCF (H2O, 6-31G). VASP has no binary here (licensed): its
process is faked with committed ``vasprun.xml`` files, so the checks whose numbers must come
from the input (translation, permutation, finite differences) are skipped with that reason,
stated in the report; :data:`EXPECTED_SKIPS` pins every skip, so none is silent. Failures
come from fault injection (mocks), a real unconverged SCF (PySCF) or committed failed outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from dft_adapters import (
    Executor,
    FailureKind,
    Labeler,
    LabelError,
    RetryPolicy,
    available_labelers,
    get_labeler,
)
from dft_adapters.contract import CHECKS, ContractSpec, check_labeler
from dft_adapters.mock import FaultInjection, LJLabeler
from dft_adapters.testing import FakeRunner, fake_executable

from .conftest import (
    FIXTURES,
    c2_diamond_for_fixture,
    cu4,
    h2o,
    require_cp2k,
    require_pw_x,
    si2,
)

QE_FAST = {
    "ecutwfc": 20,
    "kpts": (3, 3, 3),
    "conv_thr": 1e-10,
    "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},
}
CP2K_FAST = {"basis_set": "SZV-MOLOPT-SR-GTH", "cutoff": 300, "rel_cutoff": 50, "eps_scf": 1e-8}

NO_VASP = (
    "no VASP binary here (licensed): the process is faked with a committed vasprun.xml whose "
    "numbers do not depend on the input (parser and inputs: test_vasp.py, test_failures.py)"
)


@dataclass
class Case:
    """One backend under the contract."""

    make: Callable[[Path], Labeler]
    atoms: Callable[[], Atoms]
    spec: ContractSpec
    needs: Callable[[], None] | None = None
    marks: tuple = ()
    skips: frozenset[str] = field(default_factory=frozenset)
    """Checks expected to be skipped (the report says why)."""


def _fault(name: str, kind: FailureKind, **settings: object) -> Callable[[Path], Labeler]:
    return lambda _: get_labeler(name, faults=FaultInjection({kind: 1.0}), **settings)


def _fake(name: str, runner: FakeRunner, **settings: object) -> Callable[[Path], Labeler]:
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
    return _fake("espresso", runner, ecutwfc=20, pseudo_dir=_dummy_pseudo_dir(tmp))(tmp)


def h2_box() -> Atoms:
    """H2 (stretched, tilted) in a 4 Å orthorhombic box: the cheapest 3D-periodic CP2K input
    (2.6 s a label on 2 cores; measured: |ΔE| 8e-5 eV, |ΔF| 4e-3 eV/Å under translation)."""
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.1, 0.05, 0.8]], cell=[4.0, 4.2, 4.4], pbc=True)
    atoms.center()
    return atoms


MOCK_SPEC = ContractSpec(energy_per_atom=(-1.0, 1.0), fd_forces=(((0, 0), (3, 1)), 1e-4, 1e-5))

CASES = {
    "emt": Case(
        lambda _: get_labeler("emt"),
        cu4,
        dataclasses.replace(
            MOCK_SPEC,
            fd_stress=((0, 3, 5), 1e-5, 1e-5),
            failing=_fault("emt", FailureKind.SCF_UNCONVERGED),
        ),
    ),
    "lj": Case(
        lambda _: get_labeler("lj", sigma=2.3, epsilon=0.1),
        cu4,
        ContractSpec(
            energy_per_atom=(-5.0, 5.0),
            fd_forces=(((0, 0), (2, 1)), 1e-4, 1e-5),
            fd_stress=((0, 3), 1e-5, 1e-5),
            failing=_fault("lj", FailureKind.CRASHED, sigma=2.3, epsilon=0.1),
        ),
    ),
    "morse": Case(
        lambda _: get_labeler("morse", r0=2.55),
        cu4,
        ContractSpec(
            energy_per_atom=(-10.0, 0.0),
            fd_forces=(((1, 0), (2, 2)), 1e-4, 1e-5),
            fd_stress=((1, 5), 1e-5, 1e-5),
            failing=_fault("morse", FailureKind.TIMEOUT, r0=2.55),
        ),
    ),
    # measured: FD error 2.5e-4 eV/Å at h=5e-3 (truncation, ~h^2), shear stress 1e-4 eV/Å^3;
    # translation |ΔE| 1e-5 eV, |ΔF| 4e-5 eV/Å (the FFT grid). Diagonal stress is off by
    # ~1e-3 eV/Å^3 at 20 Ry (Pulay stress of a fixed-cutoff basis), so a shear one is checked.
    "espresso": Case(
        lambda _: get_labeler("espresso", **QE_FAST),
        si2,
        ContractSpec(
            energy_per_atom=(-110.0, -100.0),
            fd_forces=(((0, 2),), 2e-3, 5e-4),
            fd_stress=((5,), 2e-3, 5e-4),
            invariance=(1e-4, 5e-4),
            failing=_espresso_unconverged,
        ),
        needs=require_pw_x,
        marks=(pytest.mark.qe,),
    ),
    # PBE on a finite DFT grid without grid response: FD differs by ~2e-4 eV/Å (measured)
    "pyscf": Case(
        lambda _: get_labeler("pyscf", basis="6-31g", xc="pbe"),
        h2o,
        ContractSpec(
            energy_per_atom=(-800.0, -600.0),
            fd_forces=(((0, 2),), 1e-3, 5e-4),
            failing=lambda _: get_labeler(
                "pyscf",
                basis="6-31g",
                xc="pbe",
                max_scf_steps=1,
                retry_policy=RetryPolicy(scf_retries=1),
            ),
        ),
        skips=frozenset({"stress_fd"}),  # a molecule: no stress
    ),
    "vasp": Case(
        _fake(
            "vasp",
            FakeRunner(
                stdout="running on 1 node\n",
                files={"vasprun.xml": FIXTURES / "vasp/vasprun_C2_static.xml"},
            ),
            potcar_spec=True,
        ),
        c2_diamond_for_fixture,
        ContractSpec(
            energy_per_atom=(-11.0, -9.0),
            failing=_fake(
                "vasp",
                FakeRunner(files={"vasprun.xml": FIXTURES / "vasp/vasprun_C2_unconverged.xml"}),
                potcar_spec=True,
            ),
            skip=dict.fromkeys(("translation", "permutation", "forces_fd", "stress_fd"), NO_VASP),
        ),
        skips=frozenset({"translation", "permutation", "forces_fd", "stress_fd"}),
    ),
    # measured at 300 Ry: FD forces within 0.01 eV/Å, stress zz within 1e-3 eV/Å^3
    "cp2k": Case(
        lambda _: get_labeler("cp2k", **CP2K_FAST),
        h2_box,
        ContractSpec(
            energy_per_atom=(-20.0, -10.0),
            fd_forces=(((1, 2),), 5e-3, 0.02),
            fd_stress=((2,), 2e-3, 2e-3),
            invariance=(5e-4, 0.02),
            failing=lambda tmp: _fake(
                "cp2k",
                FakeRunner(files={"cp2k.out": FIXTURES / "cp2k/Si2_unconverged.out"}),
                **CP2K_FAST,
            )(tmp),
        ),
        needs=require_cp2k,
    ),
}


def _params() -> list:
    return [
        pytest.param(name, id=name, marks=CASES[name].marks if name in CASES else ())
        for name in available_labelers()
    ]


def test_every_registered_labeler_has_a_contract_case() -> None:
    assert set(available_labelers()) == set(CASES)


@pytest.mark.parametrize("name", _params())
def test_labeler_contract(name: str, tmp_path: Path) -> None:
    case = CASES.get(name)
    if case is None:
        pytest.fail(f"labeler {name!r} is registered but has no contract case in CASES")
    if case.needs:
        case.needs()
    report = check_labeler(case.make, case.atoms, spec=case.spec, workdir=tmp_path)
    print(report)
    report.raise_for_failures()
    assert [r.name for r in report.results] == list(CHECKS)
    assert set(report.skipped) == case.skips, report.skipped  # every skip expected, with reason
    assert all(report.skipped.values())


# ----------------------------------------------------------------------- the contract itself
class _FlippedForces(LJLabeler):
    name = "lj"

    def _compute(self, atoms, settings, directory, attempt):
        raw = super()._compute(atoms, settings, directory, attempt)
        return dataclasses.replace(raw, forces=-raw.forces)


class _TensileIsNegative(LJLabeler):
    name = "lj"

    def _compute(self, atoms, settings, directory, attempt):
        raw = super()._compute(atoms, settings, directory, attempt)
        return dataclasses.replace(raw, stress=-raw.stress)


class _OrderBlind(LJLabeler):
    """Returns the forces of the atoms sorted by x (a mapping bug of a file backend)."""

    name = "lj"

    def _compute(self, atoms, settings, directory, attempt):
        raw = super()._compute(atoms, settings, directory, attempt)
        return dataclasses.replace(raw, forces=raw.forces[np.argsort(atoms.positions[:, 0])])


@pytest.mark.parametrize(
    "cls, failing",
    [
        (_FlippedForces, {"forces_fd"}),
        (_TensileIsNegative, {"stress_fd"}),
        (_OrderBlind, {"forces_fd", "permutation"}),
    ],
)
def test_the_contract_catches_a_broken_labeler(cls, failing: set[str]) -> None:
    labeler = cls(cls.settings_cls(sigma=2.3, epsilon=0.1))
    report = check_labeler(labeler, cu4, spec=CASES["lj"].spec)
    assert set(report.failed) >= failing, str(report)
    with pytest.raises(AssertionError, match="labeler contract of 'lj'"):
        report.raise_for_failures()


def test_skips_need_a_known_check_and_are_reported() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        ContractSpec(skip={"fd": "why"})
    report = check_labeler(
        get_labeler("emt"), cu4, spec=ContractSpec(skip={"forces_fd": "reason X"})
    )
    assert report.skipped["forces_fd"] == "reason X"
    assert report.skipped["failure"].startswith("no ContractSpec.failing")  # said, not silent


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
    for name_ in cls.operator_fields():  # operator fields never enter the settings hash
        assert name_ not in cls().hashed_dict()
        with pytest.raises(AuthorSettingsError, match=f"^{name_}: is an operator setting"):
            cls.check_author_settings({name_: "/anywhere"})
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
