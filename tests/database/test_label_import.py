"""Importing labels the field's tools write: virials (DP-GEN, dpdata, GPUMD), label-like keys
pesflow does not read, two labels of one frame that disagree, and files cut short."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from database import DatabaseInputError
from database.extxyz import import_labelled

from .conftest import make_atoms
from .test_extxyz import _write_vasprun


def _frame(seed: int = 1):
    atoms = make_atoms(seed, n_cells=1)
    atoms.info["REF_energy"] = -10.0 - seed
    atoms.arrays["REF_forces"] = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    return atoms


def _stress_voigt(seed: int = 2) -> np.ndarray:
    m = np.random.default_rng(seed).normal(size=(3, 3)) * 0.01
    m = m + m.T
    return m, np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


@pytest.mark.parametrize("key", ["virial", "REF_virial", "virials"])
def test_a_virial_is_imported_as_stress_with_asess_sign(store, campaign, tmp_path, key):
    """stress = -virial / V (eV/Å^3): the frame's stress is not dropped."""
    atoms = _frame()
    tensor, voigt = _stress_voigt()
    atoms.info[key] = (-tensor * atoms.cell.volume).ravel()  # 9 numbers, eV, as dpdata writes
    path = tmp_path / "v.xyz"
    ase.io.write(path, atoms, format="extxyz")
    (lid,) = import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")
    np.testing.assert_allclose(store.get_label(lid).stress, voigt, rtol=1e-7, atol=1e-12)


def test_stress_and_a_wrong_signed_virial_are_refused_naming_the_frame(store, campaign, tmp_path):
    good, bad = _frame(1), _frame(3)
    tensor, voigt = _stress_voigt()
    for atoms, sign in ((good, -1), (bad, +1)):  # bad: the virial's sign flipped
        atoms.info["REF_stress"] = voigt
        atoms.info["virial"] = (sign * tensor * atoms.cell.volume).ravel()
    path = tmp_path / "both.xyz"
    ase.io.write(path, [good, bad], format="extxyz")
    with pytest.raises(
        DatabaseInputError, match=r"both\.xyz frame 1: REF_stress and virial disagree"
    ):
        import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")
    assert store.count_structures() == 0
    ase.io.write(path, good, format="extxyz")
    (lid,) = import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")
    np.testing.assert_allclose(store.get_label(lid).stress, voigt, rtol=1e-7, atol=1e-12)


def test_a_virial_without_a_periodic_cell_is_refused(store, campaign, tmp_path):
    atoms = _frame()
    atoms.pbc = False
    atoms.info["virial"] = np.eye(3).ravel()
    path = tmp_path / "m.xyz"
    ase.io.write(path, atoms, format="extxyz")
    with pytest.raises(DatabaseInputError, match="virial: a virial needs a periodic cell"):
        import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")


@pytest.mark.parametrize(("where", "key"), [("info", "dft_energy"), ("arrays", "dft_forces")])
def test_label_like_keys_pesflow_does_not_read_are_refused(store, campaign, tmp_path, where, key):
    atoms = _frame()
    if where == "info":
        atoms.info[key] = -3.0
    else:
        atoms.arrays[key] = np.zeros((len(atoms), 3))
    path = tmp_path / "k.xyz"
    ase.io.write(path, atoms, format="extxyz")
    with pytest.raises(DatabaseInputError, match=rf"frame 0: label-like keys .* {key}"):
        import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")
    # a file whose only energy / forces are under that key imports when it is named
    ref = "REF_energy" if where == "info" else "REF_forces"
    (atoms.info if where == "info" else atoms.arrays).pop(ref)
    ase.io.write(path, atoms, format="extxyz")
    with pytest.raises(DatabaseInputError, match=rf"label-like keys .* {key}"):
        import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")
    kw = {"energy_key": key} if where == "info" else {"forces_key": key}
    (lid,) = import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h2", **kw)
    if where == "info":
        assert store.get_label(lid).energy == -3.0


def test_a_truncated_vasprun_is_an_input_error_naming_file_and_frame(store, campaign, tmp_path):
    atoms = make_atoms(7, n_cells=1)
    rng = np.random.default_rng(1)
    steps = []
    for k in range(3):
        s = rng.normal(size=(3, 3))
        steps.append((-14.25 - k, -14.20 - k, rng.normal(size=(4, 3)), s + s.T))
    whole = tmp_path / "whole.xml"
    _write_vasprun(whole, atoms, steps)
    text = whole.read_text()
    cut = text.index("<calculation>", text.index("<calculation>") + 1) + 40
    path = tmp_path / "vasprun.xml"
    path.write_text(text[:cut])  # cut mid-way through the second <calculation>
    with pytest.raises(
        DatabaseInputError, match=r"vasprun\.xml frame 1: cannot read as vasp-xml: cut"
    ):
        import_labelled(store, path, campaign.id, labeler="vasp", settings_hash="h")
    assert store.count_structures() == 0
    with pytest.raises(DatabaseInputError, match=r"nope\.xyz: no such file"):
        import_labelled(store, tmp_path / "nope.xyz", campaign.id, labeler="x", settings_hash="h")


def test_a_label_that_disagrees_with_a_stored_one_is_refused_equal_ones_merge(
    store, campaign, tmp_path
):
    atoms = _frame(4)
    first = tmp_path / "first.xyz"
    ase.io.write(first, atoms, format="extxyz")
    (lid,) = import_labelled(store, first, campaign.id, labeler="dft", settings_hash="h")
    again = tmp_path / "again.xyz"
    ase.io.write(again, atoms, format="extxyz")
    assert import_labelled(store, again, campaign.id, labeler="dft", settings_hash="h") == [lid]
    atoms.arrays["REF_forces"][0, 0] += 0.01
    changed = tmp_path / "changed.xyz"
    ase.io.write(changed, atoms, format="extxyz")
    with pytest.raises(
        DatabaseInputError,
        match=rf"disagrees with stored label {lid} .*forces differ by up to 0.01 .*changed\.xyz frame 0",
    ):
        import_labelled(store, changed, campaign.id, labeler="dft", settings_hash="h")
    # other settings: another label of the same structure, no conflict
    (other,) = import_labelled(store, changed, campaign.id, labeler="dft", settings_hash="h2")
    assert other != lid


def test_ref_values_and_a_calculators_must_agree(store, campaign, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = _frame(5)
    forces = atoms.arrays["REF_forces"].copy()
    e = atoms.info["REF_energy"]
    atoms.calc = SinglePointCalculator(atoms, energy=e - 0.01, free_energy=e, forces=forces)
    path = tmp_path / "both.xyz"
    ase.io.write(path, atoms, format="extxyz")  # bare energy/free_energy/forces + REF_
    import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h")
    atoms.calc = SinglePointCalculator(atoms, energy=e + 1, free_energy=e + 1, forces=forces)
    ase.io.write(path, atoms, format="extxyz")
    with pytest.raises(DatabaseInputError, match="REF_energy and the calculator's energy disagree"):
        import_labelled(store, path, campaign.id, labeler="dft", settings_hash="h3")
