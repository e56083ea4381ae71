"""Each supported output layout of each file-based code has a fixture and reads to the same
numbers; a finished run in a layout no parser knows is ``unparsable_output`` — naming the code
version found in the output — and is never rerun (the code would print the same layout again).

Supported: CP2K 2023.1–2024.x and ≥ 2025.1; pw.x 6.x and 7.x; VASP 5.4 and 6.x vasprun.xml
(fixtures: ``fixtures/README.md``; the derived ones by ``fixtures/derive_layouts.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.units import GPa, Hartree, Ry

from dft_adapters import (
    Executor,
    FailureKind,
    LabelFailure,
    LabelResult,
    RetryPolicy,
    get_labeler,
)
from dft_adapters.cp2k_output import LAYOUTS, parse_cp2k_output
from dft_adapters.results import UnknownLayoutError

from .conftest import (
    FIXTURES,
    FakeRunner,
    c2_diamond_for_fixture,
    cp2k_stub_data,
    fake_executable,
    future_layout,
    si2,
)

CP2K_FIXTURES = {
    "CP2K version 2023.1": "Si2_converged.out",
    "CP2K version 2025.1": "Si2_converged_2025.out",
}


def _label(code: str, files: dict, tmp: Path, atoms, stdout: Path | str = "", **settings):
    runner = FakeRunner(stdout=stdout, files=files)
    labeler = get_labeler(
        code,
        executor=Executor(command=fake_executable(tmp / "bin", code), runner=runner),
        **settings,
    )
    return labeler.label(atoms, workdir=tmp / "calc"), runner


def _cp2k(files: dict, tmp: Path):
    return _label(
        "cp2k", files, tmp, si2(), basis_set="SZV-MOLOPT-SR-GTH", data_dir=cp2k_stub_data(tmp / "d")
    )


def test_every_cp2k_layout_has_a_fixture_and_reads_the_same_numbers() -> None:
    parsed = {
        v: parse_cp2k_output((FIXTURES / "cp2k" / f).read_text(), 2, stress=True)
        for v, f in CP2K_FIXTURES.items()
    }
    assert {p["layout"] for p in parsed.values()} == {x.releases for x in LAYOUTS}
    old, new = parsed.values()
    assert new["version"] == "CP2K version 2025.1" and old["version"] == "CP2K version 2023.1"
    assert new["energy"] == old["energy"] == pytest.approx(-7.081986342668626 * Hartree)
    np.testing.assert_array_equal(new["forces"], old["forces"])
    np.testing.assert_array_equal(new["stress"], old["stress"])
    assert abs(new["forces"][0, 0]) > 1.8  # -0.03642564 Eh/a0 = -1.873 eV/Å


@pytest.mark.parametrize("version", list(CP2K_FIXTURES))
def test_cp2k_label_from_each_release(version: str, tmp_path: Path) -> None:
    outcome, runner = _cp2k({"cp2k.out": FIXTURES / "cp2k" / CP2K_FIXTURES[version]}, tmp_path)
    assert isinstance(outcome, LabelResult), outcome
    assert outcome.code_version == version and len(runner.calls) == 1


def test_cp2k_2025_unconverged_scf_is_seen(tmp_path: Path) -> None:
    """CP2K exits 0 and prints forces after a failed SCF, in the new layout too."""
    runner = FakeRunner(files={"cp2k.out": FIXTURES / "cp2k/Si2_unconverged_2025.out"})
    labeler = get_labeler(
        "cp2k",
        basis_set="SZV-MOLOPT-SR-GTH",
        data_dir=cp2k_stub_data(tmp_path / "d"),
        executor=Executor(command=fake_executable(tmp_path, "cp2k"), runner=runner),
        retry_policy=RetryPolicy(scf_retries=0),
    )
    outcome = labeler.label(si2(), workdir=tmp_path / "c")
    assert isinstance(outcome, LabelFailure) and outcome.kind is FailureKind.SCF_UNCONVERGED
    assert outcome.code_version == "CP2K version 2025.1"


def test_cp2k_stress_in_bar_is_converted_and_an_unknown_unit_refused() -> None:
    text = (FIXTURES / "cp2k/Si2_converged.out").read_text()
    gpa = parse_cp2k_output(text, 2)["stress"]
    lines = []
    for line in text.splitlines():
        if line.startswith(" STRESS|") and line.split()[1] in "xyz" and len(line.split()) == 5:
            _, axis, *vals = line.split()
            line = f" STRESS|      {axis}" + "".join(f" {float(v) * 1e4:20.11E}" for v in vals)
        lines.append(line.replace("tensor [GPa]", "tensor [bar]"))
    np.testing.assert_allclose(parse_cp2k_output("\n".join(lines), 2)["stress"], gpa, rtol=1e-10)
    assert gpa[0] == pytest.approx(-65.0730912645 * GPa)
    with pytest.raises(UnknownLayoutError, match=r"\[atm\].*CP2K version 2023\.1"):
        parse_cp2k_output(text.replace("tensor [GPa]", "tensor [atm]"), 2)


@pytest.mark.parametrize("code", ["cp2k", "espresso", "vasp"])
def test_a_layout_no_parser_knows_is_its_own_failure_and_not_rerun(code: str, tmp_path: Path):
    """Default retry policy (crashed is retried once): the unknown layout is run once."""
    atoms = c2_diamond_for_fixture() if code == "vasp" else si2()
    extra: dict = {
        "cp2k": {"basis_set": "SZV-MOLOPT-SR-GTH", "data_dir": cp2k_stub_data(tmp_path / "d")},
        "espresso": {"pseudo_dir": str(_pseudo(tmp_path)), "ecutwfc": 20},
        "vasp": {"potcar_spec": True},
    }[code]
    name = {"cp2k": "cp2k.out", "vasp": "vasprun.xml"}.get(code)
    text = future_layout(code)
    files, stdout = ({name: text}, "") if name else ({}, text)
    outcome, runner = _label(code, files, tmp_path, atoms, stdout=stdout, **extra)
    assert isinstance(outcome, LabelFailure), outcome
    assert outcome.kind is FailureKind.UNPARSABLE_OUTPUT and len(runner.calls) == 1
    version = {"cp2k": "CP2K version 2023.1", "espresso": "pw.x 6.7MaX", "vasp": "vasp 6.3.0"}
    assert version[code] in outcome.message and outcome.code_version == version[code]
    assert Path(outcome.workdir).name == "attempt-0.failed-unparsable_output"  # kept


def _pseudo(tmp: Path) -> Path:
    d = tmp / "pseudo"
    d.mkdir(exist_ok=True)
    (d / "Si.pbe-rrkj.UPF").write_text("dummy\n")
    return d


@pytest.mark.parametrize(
    ("fixture", "version"),
    [("Si2_converged.pwo", "pw.x 6.7MaX"), ("Si2_converged_7.2.pwo", "pw.x 7.2")],
)
def test_espresso_label_from_each_release(fixture: str, version: str, tmp_path: Path) -> None:
    outcome, _ = _label(
        "espresso",
        {},
        tmp_path,
        si2(),
        stdout=FIXTURES / "espresso" / fixture,
        pseudo_dir=str(_pseudo(tmp_path)),
        ecutwfc=20,
    )
    assert isinstance(outcome, LabelResult), outcome
    assert outcome.code_version == version
    assert outcome.energy == pytest.approx(-15.68722630 * Ry, abs=5e-5)


@pytest.mark.parametrize(
    ("fixture", "version"),
    [
        ("vasprun_C2_static.xml", "vasp 6.3.0"),
        ("vasprun_C2_static_5.4.4.xml", "vasp 5.4.4.18Apr17-6-g9f103f2a35"),
    ],
)
def test_vasp_label_from_each_release(fixture: str, version: str, tmp_path: Path) -> None:
    outcome, _ = _label(
        "vasp",
        {"vasprun.xml": FIXTURES / "vasp" / fixture},
        tmp_path,
        c2_diamond_for_fixture(),
        potcar_spec=True,
    )
    assert isinstance(outcome, LabelResult), outcome
    assert outcome.code_version == version
    assert np.abs(outcome.forces).max() == pytest.approx(1.23456789)
