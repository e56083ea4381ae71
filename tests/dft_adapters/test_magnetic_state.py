"""Initial magnetic moments reach each code that takes them (issue 14, case 4), as a starting
guess, never as the spin state: CP2K gets per-kind MAGNETIZATION, unrestricted, with the
multiplicity of the settings (or free under smearing); PySCF, which fixes 2S and takes no
per-atom moments, checks them against its spin. O2 as the triplet is 1.8-1.9 eV below the
closed-shell singlet in both codes (the known ordering). What a code cannot take is refused."""

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
    lab = get_labeler("pyscf", basis="sto-3g", xc="pbe")
    triplet_lab = get_labeler("pyscf", basis="sto-3g", xc="pbe", spin=2)
    singlet, triplet = lab.label(_o2()), triplet_lab.label(_o2([1, 1]))
    assert isinstance(triplet, LabelResult) and isinstance(singlet, LabelResult)
    assert triplet.energy == pytest.approx(triplet_lab.label(_o2()).energy, abs=1e-8)
    assert 1.0 < singlet.energy - triplet.energy < 3.0
    for labeler, moments, words in (
        (lab, [1, -1], "antiferromagnetic"),
        (lab, [1, 1], "set labeler.settings.spin"),  # moments never pick the spin state
        (triplet_lab, [2, 2], "sum to 4 μB"),
    ):
        out = labeler.label(_o2(moments))
        assert isinstance(out, LabelFailure) and out.kind.value == "invalid_input"
        assert words in out.message, out.message


def test_cp2k_input_takes_moments_as_a_guess() -> None:
    """No run: multiplicity from the settings, per-kind MAGNETIZATION, UKS; free under smearing;
    refused without either."""
    kw = {"basis_set": "SZV-MOLOPT-GTH", "cutoff": 200, "rel_cutoff": 30}
    triplet_lab = get_labeler("cp2k", multiplicity=3, **kw)
    text = triplet_lab.write_input(_o2([2, 2]), triplet_lab.settings)
    assert "MULTIPLICITY 3" in text and "MAGNETIZATION 2" in text and "UNRESTRICTED" in text
    smeared = get_labeler("cp2k", smearing=0.1, **kw)
    text = smeared.write_input(_o2([2, 2]), smeared.settings)
    assert "UNRESTRICTED_KOHN_SHAM ON" in text and "MULTIPLICITY" not in text  # moment relaxes
    with pytest.raises(Exception, match=r"give labeler\.settings\.multiplicity"):
        get_labeler("cp2k", **kw).write_input(_o2([1, 1]), get_labeler("cp2k", **kw).settings)


@pytest.mark.slow
def test_real_cp2k_triplet_o2_from_the_moments(tmp_path: Path) -> None:
    """Real cp2k (two 4-s runs): multiplicity 3 with moments (1, 1) as the starting guess ->
    UKS, MAGNETIZATION 1; generous moments (2, 2) are a guess too, not a quintet."""
    require_cp2k()
    kw = {"basis_set": "SZV-MOLOPT-GTH", "cutoff": 200, "rel_cutoff": 30}
    lab, triplet_lab = get_labeler("cp2k", **kw), get_labeler("cp2k", multiplicity=3, **kw)
    text = triplet_lab.write_input(_o2([2, 2]), triplet_lab.settings)
    assert "MULTIPLICITY 3" in text and "MAGNETIZATION 2" in text and "UNRESTRICTED" in text
    singlet = lab.label(_o2(), workdir=tmp_path / "s")
    triplet = triplet_lab.label(_o2([1, 1]), workdir=tmp_path / "t")
    assert isinstance(singlet, LabelResult) and isinstance(triplet, LabelResult), (singlet, triplet)
    assert 1.0 < singlet.energy - triplet.energy < 3.0  # measured 1.78 eV
    unset = lab.label(_o2([1, 1]))  # without smearing CP2K fixes the spin: the user says which
    assert isinstance(unset, LabelFailure) and "give labeler.settings.multiplicity" in unset.message
    smeared = get_labeler("cp2k", smearing=0.1, **kw)
    text = smeared.write_input(_o2([2, 2]), smeared.settings)
    assert "UNRESTRICTED_KOHN_SHAM ON" in text and "MULTIPLICITY" not in text  # moment relaxes
