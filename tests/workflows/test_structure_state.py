"""Per-structure physical state is kept from the user's file to the store, the walkers and the
labelers (issue 14, case 4): constraints (VASP selective dynamics), initial magnetic moments,
initial charges, tags — in the structure hash too. What a labeler cannot pass to its code is
refused, never computed as another state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixBondLength
from ase.io import write
from pymatgen.io.vasp import Incar

from database import DatabaseInputError
from dft_adapters import LabelFailure, LabelResult, get_labeler
from mlip_core.md import run_walker
from workflows import steps
from workflows.config import ConfigError, load_config

from .._codes import require_pw_x
from ..mlip_core.test_md import CommitteeEMT, quick_spec
from ._campaigns import write_config


def _slab_poscar(tmp: Path) -> tuple[Path, list[int]]:
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0, periodic=True)
    fixed = [a.index for a in slab if a.tag == 3]  # bottom layer
    slab.set_constraint(FixAtoms(indices=fixed))
    write(tmp / "POSCAR", slab, format="vasp")
    assert "Selective dynamics" in (tmp / "POSCAR").read_text()
    return tmp / "POSCAR", fixed


def _afm_nio():
    a = bulk("NiO", "rocksalt", a=4.17) * (2, 1, 1)  # Ni O Ni O
    a.set_initial_magnetic_moments([2.0, 0.0, -2.0, 0.0])
    return a


def test_selective_dynamics_reaches_the_walkers_and_fixed_atoms_stay(tmp_path: Path):
    """POSCAR (bottom layer F F F) -> config -> store -> the campaign's initial structure ->
    an NVT walker: the fixed atoms move 0 Å in 20 steps while the others move; the explored
    frames keep the constraint through the store; a label of such a frame has the full forces
    (constraints act on dynamics, not on a single point)."""
    _, fixed = _slab_poscar(tmp_path)
    cfg = load_config(
        write_config(tmp_path / "c.yaml", name="slab", structures=[{"file": "POSCAR"}])
    )
    store = steps.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ctx = steps.open_context(steps.setup_campaign(store, cfg, tmp_path / "data"))
    start = ctx.initial[0]
    assert [c.todict() for c in start.constraints] == [
        {"name": "FixAtoms", "kwargs": {"indices": fixed}}
    ]
    start.rattle(0.02, seed=1)
    res = run_walker(start, CommitteeEMT(0.01), quick_spec(n_steps=20, record_every=5))
    last = res.frames[-1]
    assert np.abs(last.positions[fixed] - start.positions[fixed]).max() == 0.0
    assert np.abs(last.positions - start.positions).max() > 0.05
    (sid,) = store.add_structures([last], campaign=ctx.campaign_id)
    back = store.get_atoms([sid])[0]
    assert (
        type(back.constraints[0]).__name__ == "FixAtoms"
        and back.constraints[0].index.tolist() == fixed
    )
    label = get_labeler("emt").label(back)
    assert isinstance(label, LabelResult)
    free = back.copy()
    free.set_constraint()
    free.calc = EMT()
    np.testing.assert_allclose(label.forces, free.get_forces(), atol=1e-12)
    assert np.abs(label.forces[fixed]).max() > 1e-3  # not zeroed
    steps.close_stores()


def test_bootstrap_keeps_fixed_atoms_in_place(tmp_path: Path):
    from workflows.context import seeded_rng

    poscar, fixed = _slab_poscar(tmp_path)
    from ase.io import read

    slab = read(poscar)
    copies = steps.bootstrap_structures([slab], 3, [0.1], 0.0, seeded_rng("b"))
    for c in copies:
        assert np.abs(c.positions[fixed] - slab.positions[fixed]).max() == 0.0
        assert np.abs(c.positions - slab.positions).max() > 0.05


def test_magnetic_state_is_in_the_hash_and_the_labeler_inputs(tmp_path: Path):
    """AFM and FM copies of one NiO geometry are two structures; both come back with their
    moments; VASP gets MAGMOM in its species order, pw.x one species per (element, moment)
    with starting_magnetization = m / z_valence; CP2K one kind per (element, moment) with its
    MAGNETIZATION, unrestricted; EMT (no moments) and PySCF (a total spin only: no
    antiferromagnetic start) refuse (invalid_input) instead of computing another state."""
    afm = _afm_nio()
    fm = afm.copy()
    fm.set_initial_magnetic_moments([2.0, 0.0, 2.0, 0.0])
    store = steps.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ids = store.add_structures([afm, fm, afm.copy()])
    assert ids[0] != ids[1] and ids[2] == ids[0]
    back_afm, back_fm = store.get_atoms(ids[:2])
    assert back_afm.get_initial_magnetic_moments().tolist() == [2.0, 0.0, -2.0, 0.0]
    assert back_fm.get_initial_magnetic_moments().tolist() == [2.0, 0.0, 2.0, 0.0]
    plain = afm.copy()
    plain.set_initial_magnetic_moments(None)
    assert store.add_structures([plain])[0] not in ids
    steps.close_stores()

    vasp = get_labeler("vasp", potcar_spec=True)
    vasp.write_inputs(back_afm, tmp_path / "vasp", vasp.settings)
    incar = Incar.from_file(tmp_path / "vasp" / "INCAR")
    assert incar["ISPIN"] == 2 and incar["MAGMOM"] == [2.0, -2.0, 0.0, 0.0]  # Ni Ni O O

    require_pw_x()  # its pseudopotentials (skips on a user's machine without QE, fails in CI)
    pseudo = Path("/usr/share/espresso/pseudo")
    qe = get_labeler("espresso", pseudo_dir=str(pseudo), ecutwfc=20)
    params = qe.input_parameters(back_afm, qe.settings)
    fractions = qe.magnetized(back_afm, qe.settings, params["pseudopotentials"])
    assert fractions.get_initial_magnetic_moments().tolist() == [0.2, 0.0, -0.2, 0.0]  # z_val 10
    refused = {
        "emt": "does not pass the structure's initial magnetic moments",
        "pyscf": "an antiferromagnetic start",
    }  # PySCF takes a total spin only
    for name, words in refused.items():
        outcome = get_labeler(name).label(back_afm)
        assert isinstance(outcome, LabelFailure) and outcome.kind.value == "invalid_input", name
        assert words in outcome.message, outcome.message
    cp2k_lab = get_labeler("cp2k", multiplicity=1)
    cp2k = cp2k_lab.write_input(back_afm, cp2k_lab.settings)
    for line in (
        "&KIND Ni1",
        "&KIND Ni2",
        "MAGNETIZATION 2",
        "MAGNETIZATION -2",
        "UNRESTRICTED_KOHN_SHAM ON",
        "MULTIPLICITY 1",
    ):
        assert line in cp2k, line


def test_unkept_state_is_refused_at_the_store_and_by_validate(tmp_path: Path):
    a = bulk("Cu", cubic=True)
    a.set_constraint(FixBondLength(0, 1))
    store = steps.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(DatabaseInputError, match="constraint FixBondLengths is not kept"):
        store.add_structures([a])
    steps.close_stores()
    write(tmp_path / "nio.extxyz", _afm_nio())
    with pytest.raises(ConfigError, match=r"structures\[0\]\.file: labeler 'emt' does not pass"):
        steps.initial_structures(
            load_config(write_config(tmp_path / "n.yaml", structures=[{"file": "nio.extxyz"}]))
        )


def test_file_sources_take_repeat_with_their_state(tmp_path: Path):
    """`repeat` on a file source builds the supercell like `generate` does, constraints and
    moments repeated with the atoms; along a non-periodic direction it is refused."""
    _, fixed = _slab_poscar(tmp_path)  # periodic in POSCAR: vacuum along c
    cfg = load_config(
        write_config(tmp_path / "c.yaml", structures=[{"file": "POSCAR", "repeat": [2, 2, 1]}])
    )
    (big,) = steps.initial_structures(cfg)
    assert len(big) == 48
    (c,) = big.constraints
    assert sorted(c.index.tolist()) == sorted(i + 12 * k for k in range(4) for i in fixed)
    write(tmp_path / "slab.extxyz", fcc111("Cu", (2, 2, 3), vacuum=6.0))  # pbc T T F
    bad = write_config(
        tmp_path / "b.yaml", structures=[{"file": "slab.extxyz", "repeat": [1, 1, 2]}]
    )
    with pytest.raises(ConfigError, match=r"repeat: frame 0 is not periodic along c"):
        steps.initial_structures(load_config(bad))
