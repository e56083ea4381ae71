"""Initial magnetic moments reach each code that takes them (issue 14, case 4): PySCF as the
total spin 2S, CP2K as per-kind MAGNETIZATION with an unrestricted multiplicity; O2 started
from moments (1, 1) is the triplet, 1.8-1.9 eV below the closed-shell singlet in both codes
(the known ordering). What a code cannot take is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms

from dft_adapters import LabelFailure, LabelResult, get_labeler

from .conftest import require_cp2k


def _o2(moments=None) -> Atoms:
    o2 = Atoms("O2", positions=[[0, 0, 0], [0, 0, 1.21]], cell=[6, 6, 6])
    o2.center()
    if moments is not None:
        o2.set_initial_magnetic_moments(moments)
    return o2


def test_pyscf_spin_from_the_moments() -> None:
    pytest.importorskip("pyscf")
    lab = get_labeler("pyscf", basis="sto-3g", xc="pbe")
    singlet, triplet = lab.label(_o2()), lab.label(_o2([1, 1]))
    explicit = get_labeler("pyscf", basis="sto-3g", xc="pbe", spin=2).label(_o2())
    assert isinstance(triplet, LabelResult) and isinstance(singlet, LabelResult)
    assert triplet.energy == pytest.approx(explicit.energy, abs=1e-8)
    assert 1.0 < singlet.energy - triplet.energy < 3.0
    for moments, words in (([1, -1], "antiferromagnetic"), ([0.7, 0.7], "not a whole number")):
        out = lab.label(_o2(moments))
        assert isinstance(out, LabelFailure) and out.kind.value == "invalid_input"
        assert words in out.message
    clash = get_labeler("pyscf", basis="sto-3g", spin=4).label(_o2([1, 1]))
    assert isinstance(clash, LabelFailure) and "disagrees" in clash.message


def test_real_cp2k_triplet_o2_from_the_moments(tmp_path: Path) -> None:
    """Real cp2k (two 4-s runs): moments (1, 1) -> MULTIPLICITY 3, UKS, MAGNETIZATION 1."""
    require_cp2k()
    lab = get_labeler("cp2k", basis_set="SZV-MOLOPT-GTH", cutoff=200, rel_cutoff=30)
    text = lab.write_input(_o2([1, 1]), lab.settings)
    assert "MULTIPLICITY 3" in text and "MAGNETIZATION 1" in text
    singlet = lab.label(_o2(), workdir=tmp_path / "s")
    triplet = lab.label(_o2([1, 1]), workdir=tmp_path / "t")
    assert isinstance(singlet, LabelResult) and isinstance(triplet, LabelResult), (singlet, triplet)
    assert 1.0 < singlet.energy - triplet.energy < 3.0  # measured 1.78 eV
    half = lab.label(_o2([0.5, 0.6]))
    assert isinstance(half, LabelFailure) and "not a whole number" in half.message
