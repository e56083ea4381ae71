"""Dataset export / import: extended XYZ with REF_* keys, readable by ASE; seeding a campaign
from extxyz (REF_* or bare calculator keys) and from a VASP vasprun.xml."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from database import DatabaseInputError, Origin, SelectionInput
from database.extxyz import export_extxyz, import_labelled, labelled_atoms, read_labelled

from .conftest import make_atoms, make_result


@pytest.fixture
def labelled(store, campaign):
    it = store.start_iteration(campaign.id)
    frames = [make_atoms(i, symbols="Cu") for i in range(8)]
    frames[3].numbers[:4] = 79  # mixed species
    sids = store.add_structures(
        frames,
        campaign=campaign.id,
        iteration_id=it.id,
        origins=[
            Origin(walker=f"w{i % 2}", temperature=300.0 + i, md_step=10 * i) for i in range(8)
        ],
    )
    store.record_selections(
        campaign.id, [SelectionInput(s, 0.25) for s in sids], iteration_id=it.id
    )
    lids = store.request_labels(
        campaign.id,
        sids,
        labeler="mock",
        settings_hash="h1",
        labeler_version="2.1 beta",
        iteration_id=it.id,
    )
    results = {}
    for t in store.claim_labels(limit=100):
        e, f, s = make_result(t.atoms, t.label_id)
        if t.label_id == lids[5]:
            store.store_failure(t.label_id, kind="crashed", message="boom")
            continue
        store.store_result(
            t.label_id, energy=e, forces=f, stress=None if t.label_id == lids[0] else s
        )
        results[t.label_id] = (e, f, s)
    return store, campaign, frames, lids, results


def test_export_is_read_by_ase_with_ref_keys_and_provenance(labelled, tmp_path):
    store, c, frames, lids, results = labelled
    path = tmp_path / "train.xyz"
    n = export_extxyz(store, path, c.id, labeler="mock", settings_hash="h1", config_type="bulk")
    assert n == 7
    text = path.read_text()
    assert " energy=" not in text and ":forces:" not in text  # never the bare keys
    images = ase.io.read(path, index=":", format="extxyz")
    done_ids = [i for i in lids if i != lids[5]]
    assert [a.info["label_id"] for a in images] == done_ids
    for a in images:
        assert a.calc is None  # ASE did not turn anything into a calculator
        e, f, s = results[a.info["label_id"]]
        src = frames[lids.index(a.info["label_id"])]
        assert a.info["REF_energy"] == e  # energies are written in full precision
        np.testing.assert_allclose(a.arrays["REF_forces"], f, rtol=0, atol=5e-9)
        np.testing.assert_allclose(a.positions, src.positions, rtol=0, atol=5e-9)
        assert a.get_chemical_symbols() == src.get_chemical_symbols()
        if a.info["label_id"] == lids[0]:
            assert "REF_stress" not in a.info
        else:
            assert a.info["REF_stress"].shape == (6,)
            np.testing.assert_allclose(a.info["REF_stress"], s, rtol=1e-15)
        assert a.info["config_type"] == "bulk"
        assert (a.info["campaign"], a.info["iteration"], a.info["labeler"]) == ("cu", 0, "mock")
        assert a.info["labeler_version"] == "2.1 beta"
        assert a.info["settings_hash"] == "h1"
        assert a.info["walker"] in ("w0", "w1") and a.info["temperature"] >= 300.0
        assert len(a.info["structure_hash"]) == 64


def test_mace_style_reader_sees_energy_forces_stress(labelled, tmp_path):
    # What MACE's data loader does with --energy_key/--forces_key/--stress_key.
    store, c, *_ = labelled
    path = tmp_path / "train.xyz"
    export_extxyz(store, path, c.id, labeler="mock", settings_hash="h1")
    for a in ase.io.read(path, index=":"):
        energy = a.info.get("REF_energy")
        forces = a.arrays.get("REF_forces")
        assert isinstance(energy, float) and forces.shape == (len(a), 3)


def test_export_then_import_into_a_new_campaign_reuses_structures_and_labels(labelled, tmp_path):
    store, c, _frames, lids, results = labelled
    path = tmp_path / "train.xyz"
    export_extxyz(store, path, c.id, labeler="mock", settings_hash="h1")
    n_structures = store.count_structures()
    new = store.create_campaign("seeded")
    ids = import_labelled(store, path, new.id, labeler="mock", settings_hash="h1")
    assert store.count_structures() == n_structures  # every frame found again by its hash
    assert ids == [i for i in lids if i != lids[5]]  # the existing done labels are reused
    assert store.training_label_ids(new.id, labeler="mock", settings_hash="h1").tolist() == sorted(
        ids
    )
    # Imported under other settings they become new done labels of the same structures.
    other = import_labelled(store, path, new.id, labeler="mock", settings_hash="h-imported")
    assert not set(other) & set(ids) and store.count_structures() == n_structures
    lb = store.get_label(other[1])
    assert lb.status == "done" and lb.energy == results[ids[1]][0]


def test_import_extxyz_with_bare_calculator_keys(store, campaign, tmp_path):
    frames = []
    for i in range(3):
        a = make_atoms(50 + i)
        e, f, s = make_result(a, i)
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        frames.append(a)
    path = tmp_path / "legacy.extxyz"
    ase.io.write(path, frames, format="extxyz")  # writes energy=, forces, stress=
    ids = import_labelled(store, path, campaign.id, labeler="legacy", settings_hash="x")
    for a, lid in zip(frames, ids, strict=True):
        lb = store.get_label(lid)
        assert lb.energy == pytest.approx(a.calc.results["energy"], abs=1e-12)
        np.testing.assert_allclose(lb.forces, a.calc.results["forces"], atol=5e-9)
        np.testing.assert_allclose(lb.stress, a.calc.results["stress"], rtol=1e-12, atol=1e-15)
    rec = store.get_structure(store.get_label(ids[2]).structure_id)
    assert rec.source == "import" and rec.info["frame"] == 2
    assert [s.reason for s in store.list_selections(campaign.id)] == ["seed"] * 3


def _write_vasprun(path, atoms, steps) -> None:
    """A minimal vasprun.xml (the parts ASE's vasp-xml reader uses); stress in kBar."""

    def varray(name, rows):
        body = "".join(f"<v>{' '.join(f'{x:.10f}' for x in r)}</v>" for r in rows)
        return f'<varray name="{name}">{body}</varray>'

    species = "".join(f"<rc><c>{s}</c><c>1</c></rc>" for s in atoms.get_chemical_symbols())
    structure = (
        f"<crystal>{varray('basis', atoms.cell.array)}</crystal>"
        f"{varray('positions', atoms.get_scaled_positions())}"
    )
    calcs = ""
    for e_fr, e_0, forces, stress_kbar in steps:
        calcs += (
            f'<calculation><scstep><energy><i name="e_fr_energy">{e_fr}</i>'
            f'<i name="e_0_energy">{e_0}</i></energy></scstep>'
            f"<structure>{structure}</structure>{varray('forces', forces)}"
            f"{varray('stress', stress_kbar)}"
            f'<energy><i name="e_fr_energy">{e_fr}</i><i name="e_0_energy">{e_0}</i>'
            f"</energy></calculation>"
        )
    path.write_text(
        '<?xml version="1.0" encoding="ISO-8859-1"?><modeling>'
        '<kpoints><varray name="kpointlist"><v>0 0 0</v></varray>'
        '<varray name="weights"><v>1.0</v></varray></kpoints>'
        '<parameters><i name="ENCUT">400.0</i></parameters>'
        f'<atominfo><array name="atoms"><set>{species}</set></array></atominfo>'
        f'<structure name="initialpos">{structure}</structure>{calcs}</modeling>'
    )


def test_import_vasprun(store, campaign, tmp_path):
    atoms = make_atoms(7, n_cells=1)
    rng = np.random.default_rng(1)
    stress = rng.normal(size=(3, 3))
    step = (-14.25, -14.20, rng.normal(size=(4, 3)), stress + stress.T)
    steps = [step, step]
    path = tmp_path / "vasprun.xml"
    _write_vasprun(path, atoms, [(-14.25, -14.20, step[2], step[3]), (-15.25, -15.2, *step[2:])])
    # identical geometry, different energies: two labels of one structure that disagree
    with pytest.raises(
        DatabaseInputError,
        match=r"disagree \(energy .*vasprun\.xml frame 0 and .*vasprun\.xml frame 1",
    ):
        import_labelled(store, path, campaign.id, labeler="vasp", settings_hash="pbe-400")
    assert store.count_structures() == 0
    _write_vasprun(path, atoms, steps)
    assert len(read_labelled(path)) == 2
    ids = import_labelled(store, path, campaign.id, labeler="vasp", settings_hash="pbe-400")
    # identical geometry and labels in both ionic steps: one structure, one label
    assert len(set(ids)) == 1 and store.count_structures() == 1
    lb = store.get_label(ids[0])
    e_fr, _, forces, sk = steps[0]
    assert lb.energy == pytest.approx(e_fr)  # force-consistent free energy
    np.testing.assert_allclose(lb.forces, forces, atol=1e-9)
    expected = -0.1 * GPa * sk.reshape(9)[[0, 4, 8, 5, 2, 1]]
    np.testing.assert_allclose(lb.stress, expected, atol=1e-12)


def test_import_without_forces_is_refused_and_stores_nothing(store, campaign, tmp_path):
    good = make_atoms(1)
    good.info["REF_energy"] = -10.0
    good.arrays["REF_forces"] = np.zeros((len(good), 3))
    bad = make_atoms(2)
    bad.info["REF_energy"] = -11.0
    path = tmp_path / "bad.xyz"
    ase.io.write(path, [good, bad], format="extxyz")
    with pytest.raises(DatabaseInputError, match=r"frame 1: no forces"):
        import_labelled(store, path, campaign.id, labeler="x", settings_hash="y")
    assert store.count_structures() == 0


def test_export_is_byte_identical_to_ase_writer(labelled, tmp_path):
    store, c, *_ = labelled
    ours = tmp_path / "ours.xyz"
    export_extxyz(store, ours, c.id, labeler="mock", settings_hash="h1")
    images = [
        labelled_atoms(x, campaign="cu", iteration=0)
        for x in store.training_set(c.id, labeler="mock", settings_hash="h1")
    ]
    ref = tmp_path / "ase.xyz"
    ase.io.write(ref, images, format="extxyz", write_results=False)
    assert ours.read_bytes() == ref.read_bytes()
