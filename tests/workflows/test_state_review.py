"""Fresh-user findings on structure state (issue 14, case 4), each a regression test: the
state survives an export/import round trip (selective dynamics ``F F T`` included), moments
hash like positions, VASP never gets the input set's default moments, generated structures
take ``initial_magmom``, charges reach the codes that take a total charge, the API shows the
state, and one campaign never mixes two spin states of one geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixScaled
from ase.io import write
from pymatgen.io.vasp import Incar

from database.extxyz import export_extxyz, read_labelled
from dft_adapters import LabelFailure, get_labeler
from workflows import steps
from workflows.config import ConfigError, load_config
from workflows.config_structures import GenerateConfig

from ._campaigns import write_config


def _slab() -> Atoms:
    s = fcc111("Cu", (2, 2, 3), vacuum=6.0, periodic=True)
    s.set_constraint([FixAtoms(indices=[0, 1]), FixScaled([4, 5], mask=[False, False, True])])
    s.set_initial_magnetic_moments(np.linspace(0.1, 1.2, 12) + 1.6123456789)
    return s


def test_export_import_round_trip_keeps_the_state_and_finds_the_rows(tmp_path: Path):
    store = steps.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    cid = store.create_campaign("a").id
    slab = _slab()
    calc = slab.copy()
    calc.calc = EMT()
    store.add_labelled(
        cid,
        [slab],
        energies=[calc.get_potential_energy()],
        forces=[calc.get_forces()],
        stresses=[calc.get_stress()],
        labeler="emt",
        settings_hash="h" * 64,
    )
    out = tmp_path / "a.extxyz"
    assert export_extxyz(store, out, cid, labeler="emt", settings_hash="h" * 64) == 1
    (back,) = read_labelled(out)
    assert [c.todict() for c in back.constraints] == [c.todict() for c in slab.constraints]
    (again,) = store.add_structures([back])  # moments printed to 8 decimals: the same row
    assert again == store.list_labels(cid, limit=None)[0].structure_id
    nudged = slab.copy()
    nudged.set_initial_magnetic_moments(slab.get_initial_magnetic_moments() + 1e-12)
    assert store.add_structures([nudged]) == [again]
    steps.close_stores()


def test_vasp_gets_the_structures_moments_never_the_input_sets_defaults(tmp_path: Path):
    nio = bulk("NiO", "rocksalt", a=4.17) * (2, 1, 1)
    vasp = get_labeler("vasp", potcar_spec=True)
    vasp.write_inputs(nio, tmp_path, vasp.settings)
    assert Incar.from_file(tmp_path / "INCAR")["MAGMOM"] == [0.0] * 4  # not MP's Ni 5 / O 0.6


def test_generated_structures_take_initial_magmom():
    plain = GenerateConfig(element="Ni").build()
    assert not plain.get_initial_magnetic_moments().any()  # ASE's 0.6 guess is not kept
    fm = GenerateConfig(element="Ni", initial_magmom=0.6).build()
    assert fm.get_initial_magnetic_moments().tolist() == [0.6] * len(fm)


def test_charges_reach_the_codes_that_take_a_total_charge(tmp_path: Path):
    oh = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]], cell=[8, 8, 8])
    oh.center()
    oh.set_initial_charges([-1.0, 0.0])
    cp2k = get_labeler("cp2k")
    assert "CHARGE -1" in cp2k.write_input(oh, cp2k.settings)
    for f in ("O.UPF", "H.UPF"):
        (tmp_path / f).write_text("dummy\n")
    qe = get_labeler(
        "espresso",
        pseudo_dir=str(tmp_path),
        ecutwfc=20,
        pseudopotentials={"O": "O.UPF", "H": "H.UPF"},
    )
    assert qe.input_parameters(oh, qe.settings)["input_data"]["system"]["tot_charge"] == -1
    emt = get_labeler("emt").label(oh)
    assert isinstance(emt, LabelFailure) and "use cp2k / espresso / pyscf" in emt.message
    oh.set_initial_charges([-0.5, 0.0])
    with pytest.raises(Exception, match="not a whole number"):
        cp2k.write_input(oh, cp2k.settings)
    clash = get_labeler("cp2k", charge=1)
    oh.set_initial_charges([-1.0, 0.0])
    with pytest.raises(Exception, match="disagrees"):
        clash.write_input(oh, clash.settings)


def test_one_campaign_never_mixes_two_spin_states_of_one_geometry(tmp_path: Path):
    afm = bulk("NiO", "rocksalt", a=4.17) * (2, 1, 1)
    fm = afm.copy()
    afm.set_initial_magnetic_moments([2, 0, -2, 0])
    fm.set_initial_magnetic_moments([2, 0, 2, 0])
    write(tmp_path / "afm.extxyz", afm)
    write(tmp_path / "fm.extxyz", fm)
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for f in ("Ni.UPF", "O.UPF"):
        (pseudo / f).write_text('<UPF version="2.0.1">\n<PP_HEADER z_valence="1.0e1"/>\n')
    cfg = write_config(
        tmp_path / "c.yaml",
        structures=[{"file": "afm.extxyz"}, {"file": "fm.extxyz"}],
        labeler={
            "name": "espresso",
            "settings": {
                "pseudo_dir": str(pseudo),
                "pseudopotentials": {"Ni": "Ni.UPF", "O": "O.UPF"},
            },
        },
        exploration={
            "walkers": [{"temperature": 300, "steps": 100, "record_every": 5, "timestep": 1.0}]
        },
    )
    with pytest.raises(
        ConfigError, match=r"structures\[1\]\.file has the geometry of structures\[0\]\.file"
    ):
        steps.initial_structures(load_config(cfg))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"trust": {"energy_lo": 5, "energy_hi": 50}},
            r"energy_lo=5 eV/atom: .* given in meV/atom\? \(0\.005",
        ),
        (
            {"training": {"ignore_settings_keys": ["smaering"]}},
            r"'smaering' is not a setting of labeler 'emt'",
        ),
        (
            {"structures": [{"file": "POSCAR", "repeat": [1, 1, 2]}]},
            r"repeat: frame 0 has 1\d\.\d Å of vacuum along c",
        ),
    ],
)
def test_more_unit_slips_and_typos_are_refused(tmp_path: Path, override: dict, message: str):
    write(tmp_path / "POSCAR", fcc111("Cu", (2, 2, 3), vacuum=6.0, periodic=True), format="vasp")
    with pytest.raises(ConfigError, match=message):
        steps.initial_structures(load_config(write_config(tmp_path / "c.yaml", **override)))


def test_mace_e0s_are_refused_where_the_compositions_do_not_determine_them():
    """One stoichiometry of a compound fixes only E(Ni) + E(O): no E0s are invented."""
    from workflows.context import CampaignFailedError
    from workflows.export import isolated_atom_energies

    frames = []
    for k, n in enumerate((1, 2)):
        a = bulk("NiO", "rocksalt", a=4.17) * (n, 1, 1)
        a.info["REF_energy"] = -10.0 * n - 0.1 * k
        a.arrays["REF_forces"] = np.zeros((len(a), 3))
        frames.append(a)
    with pytest.raises(CampaignFailedError, match=r"do not determine .* 2 element\(s\) \(rank 1\)"):
        isolated_atom_energies(frames)
    cu = bulk("Cu") * (2, 1, 1)
    cu.info["REF_energy"] = -7.0
    cu.arrays["REF_forces"] = np.zeros((2, 3))
    assert isolated_atom_energies([cu]) == {29: pytest.approx(-3.5)}
