"""Structure sources: content parsed in a temporary directory (size-limited, guarded against
counts the text cannot hold), local files never from the data directory or the database, and
the API's import policy with one answer for every refused path."""

from __future__ import annotations

import copy
import os
import re
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk

from workflows.config import ConfigError, StructurePolicy, load_config, parse_config
from workflows.structure_files import NOT_IMPORTABLE, read_file
from workflows.structure_text import parse_text

from .conftest import EXAMPLE

BASE = yaml.safe_load(EXAMPLE.read_text())


def _text(atoms, fmt: str) -> str:
    """The file text ASE writes for ``atoms`` in ``fmt``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        ase.io.write(path, atoms, format={"poscar": "vasp"}.get(fmt, fmt))
        return path.read_text()


def _cfg(structures, policy=None, labeler=None):
    data = copy.deepcopy(BASE)
    data["structures"] = structures
    if labeler is not None:
        data["labeler"] = labeler
    return parse_config(data, source="c.yaml", policy=policy)


@pytest.mark.parametrize("fmt", ["extxyz", "cif", "poscar"])
def test_content_round_trips(fmt):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.positions[0] += 0.05
    cfg = _cfg([{"content": _text(atoms, fmt), "format": fmt}])
    from workflows.structures import initial_structures

    (got,) = initial_structures(cfg, StructurePolicy())
    assert np.array_equal(got.numbers, atoms.numbers)
    assert np.allclose(got.cell.array, atoms.cell.array)
    assert np.allclose(got.get_scaled_positions() % 1, atoms.get_scaled_positions() % 1)


def test_content_errors_name_the_source_and_never_the_temporary_path():
    with pytest.raises(ConfigError) as exc:
        _cfg([{"generate": {"element": "Cu"}}, {"content": "not a crystal", "format": "cif"}])
    msg = str(exc.value)
    assert msg.startswith("c.yaml: structures[1].content: cannot parse content as cif")
    assert "pesflow-structure-" not in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"structures\[0\].content: 'format' is required"):
        _cfg([{"content": "x"}])
    with pytest.raises(ConfigError, match="exactly one of 'file', 'content' or 'generate'"):
        _cfg([{"content": "x", "format": "cif", "generate": {"element": "Cu"}}])


def test_content_index_selects_frames_and_names_what_it_missed():
    frames = [bulk("Cu", "fcc", a=a, cubic=True) for a in (3.5, 3.6, 3.7)]
    with tempfile.TemporaryDirectory() as tmp:
        ase.io.write(Path(tmp) / "t.xyz", frames, format="extxyz")
        text = (Path(tmp) / "t.xyz").read_text()
    cells = {
        i: [round(a.cell[0, 0], 3) for a in parse_text(text, "extxyz", i)]
        for i in (":", "-1", "1:", "::2", "0")
    }
    assert cells == {
        ":": [3.5, 3.6, 3.7],
        "-1": [3.7],
        "1:": [3.6, 3.7],
        "::2": [3.5, 3.7],
        "0": [3.5],
    }
    for index in ("3", "-4", "5:"):
        with pytest.raises(ValueError, match=rf"index '{index}' selects no frame: content has 3"):
            parse_text(text, "extxyz", index)
    with pytest.raises(ConfigError, match=r"structures\[0\].index: '::0' is not an ASE index"):
        _cfg([{"content": text, "format": "extxyz", "index": "::0"}])


def test_the_json_schema_of_a_source_says_what_the_model_accepts():
    """Bodies valid under the JSON Schema are the ones the model accepts (clients and fuzzers
    build configs from it): exactly one source, never null, 'format' not with 'generate', and
    a lattice constant unless the crystal is the element's reference crystal."""
    import jsonschema
    from pydantic import ValidationError

    from workflows.config_structures import StructureSource

    validator = jsonschema.Draft202012Validator(StructureSource.model_json_schema())
    cases = [
        {"generate": {"element": "Cu"}},
        {"generate": {"element": "Fe", "crystal": "bcc"}},
        {"generate": {"element": "Fe"}},  # Fe's reference crystal is bcc, not the default fcc
        {"generate": {"element": "H"}},
        {"generate": {"element": "H", "lattice_constant": 2.0}},
        {"generate": {"element": "Xx"}},
        {"generate": {"element": "Cu"}, "format": "cif"},
        {"content": "x", "format": "cif"},
        {"content": "x"},
        {"content": "x", "format": "cif", "generate": {"element": "Cu"}},
        {"file": "a.cif", "content": "x", "format": "cif"},
        {"file": None, "generate": {"element": "Cu"}},
        {"file": "a.cif"},
        {"generate": {"elements": ["Si", "C"], "crystal": "zincblende", "lattice_constant": 4.36}},
        {"generate": {"elements": ["Si", "C"], "crystal": "zincblende"}},  # no reference a
        {"generate": {"elements": ["Si", "Si"], "crystal": "zincblende", "lattice_constant": 5}},
        {"generate": {"elements": ["Si", "C"], "lattice_constant": 4.36}},  # fcc: one species
        {"generate": {"element": "Si", "crystal": "zincblende", "lattice_constant": 4.36}},
        {"generate": {"element": "Si", "elements": ["Si", "C"], "crystal": "zincblende"}},
        {"generate": {"elements": ["Na", "Cl"], "crystal": "rocksalt", "lattice_constant": 5.64}},
        {"generate": {"crystal": "fcc", "lattice_constant": 3.6}},
    ]
    for body in cases:
        try:
            StructureSource.model_validate(body)
            accepted = True
        except ValidationError:
            accepted = False
        if body.get("file", 0) is None:  # explicit null: the model is lenient, the schema not
            assert accepted and not validator.is_valid(body)
            continue
        assert validator.is_valid(body) == accepted, body


PARTIAL_CIF = """data_CuAu
_cell_length_a 3.8
_cell_length_b 3.8
_cell_length_c 3.8
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Cu1 Cu 0 0 0 {mixed}
Au1 Au 0 0 0 {mixed}
Cu2 Cu 0.5 0.5 0 1.0
Cu3 Cu 0.5 0 0.5 {vac}
"""


@pytest.mark.parametrize(
    ("mixed", "vac", "problem"),
    [
        (0.5, 1.0, r"site Cu1 \(Au 0.5, Cu 0.5"),
        (1.0, 0.8, r"site Cu3 \(Cu 0.8; atoms \[2\]\)"),
    ],
)
def test_partially_occupied_sites_are_refused_naming_them(tmp_path, mixed, vac, problem):
    """ASE reads a partially occupied CIF as one definite composition (another material):
    content, local files and API imports all refuse it the same way."""
    text = PARTIAL_CIF.format(mixed=mixed, vac=vac)
    if mixed == 1.0:  # no mixed site: keep one species there
        text = text.replace("Au1 Au 0 0 0 1.0\n", "")
    with pytest.raises(ConfigError, match="partially occupied or mixed site") as exc:
        _cfg([{"content": text, "format": "cif"}])
    assert re.search(problem, str(exc.value)), str(exc.value)
    (tmp_path / "p.cif").write_text(text)
    with pytest.raises(ConfigError, match="partially occupied or mixed site"):
        _cfg([{"file": str(tmp_path / "p.cif")}], policy=StructurePolicy(base_dir=tmp_path))
    ordered = PARTIAL_CIF.format(mixed=1.0, vac=1.0).replace("Au1 Au 0 0 0 1.0\n", "")
    _cfg([{"content": ordered, "format": "cif"}])


def test_dummy_species_are_refused():
    text = '2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\nX 2 2 2\n'
    with pytest.raises(ConfigError, match=r"dummy or vacancy species \(X\) at atoms \[1\]"):
        _cfg([{"content": text, "format": "extxyz"}])


def test_a_slab_with_a_zero_non_periodic_vector_is_accepted():
    """ASE's standard slab (``fcc111``, pbc T T F, zero third vector) is a valid structure; a
    zero or dependent *periodic* vector is not."""
    from ase.build import fcc111

    from workflows.structure_text import check_geometry

    slab = fcc111("Cu", (2, 2, 3))
    slab.pbc = (True, True, False)
    assert slab.cell.volume == 0
    check_geometry(slab, "slab")
    (got,) = _cfg([{"content": _text(slab, "extxyz"), "format": "extxyz"}]).structures[0:1]
    assert got.content is not None
    flat = slab.copy()
    flat.pbc = True
    with pytest.raises(ValueError, match=r"periodic vectors .* are zero or linearly dependent"):
        check_geometry(flat, "slab")
    skew = slab.copy()
    skew.cell[1] = 2 * skew.cell[0]
    with pytest.raises(ValueError, match=r"periodic vectors .* are zero or linearly dependent"):
        check_geometry(skew, "slab")


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"content": "2\n\nCu 0 0 0\nCu 0 0 0.3\n", "format": "extxyz"}, "0.300 Å from atom"),
        (
            {
                "content": '2\nLattice="0 0 0 0 0 0 0 0 0" pbc="T T T"\nCu 0 0 0\nCu 0 0 2\n',
                "format": "extxyz",
            },
            "degenerate cell",
        ),
        (
            {"generate": {"element": "Cu", "lattice_constant": 0.6}},
            r"generate.lattice_constant: must be >= 1.0 \(got 0.6\)$",
        ),
        (
            {
                "generate": {
                    "element": "H",
                    "crystal": "sc",
                    "lattice_constant": 1.0,
                    "surface": [1, 0, 0],
                    "layers": 3,
                    "vacuum": 1e-9,
                }
            },
            None,
        ),
    ],
)
def test_unphysical_geometries_are_refused(source, problem):
    """Overlapping atoms, a periodic cell without volume, a lattice constant below 1 Å: the
    config names the problem (nothing is computed on them)."""
    if problem is None:
        _cfg([source])
        return
    with pytest.raises(ConfigError, match=problem):
        _cfg([source])


def test_oversize_content_is_refused_before_parsing():
    policy = StructurePolicy(max_content_bytes=100)
    with pytest.raises(ConfigError, match=r"structures\[0\].content: 101 bytes, more than"):
        _cfg([{"content": "x" * 101, "format": "extxyz"}], policy=policy)


@pytest.mark.parametrize(
    "fmt, text",
    [
        ("poscar", "x\n1.0\n1 0 0\n0 1 0\n0 0 1\nCu\n1000000000\nDirect\n0 0 0\n"),
        ("extxyz", '1000000000\nLattice="1 0 0 0 1 0 0 0 1"\nCu 0 0 0\n'),
        ("xyz", "99999999999999\n\nCu 0 0 0\n"),
    ],
)
def test_counts_the_text_cannot_hold_are_refused_at_once(fmt, text):
    # ASE would allocate 10^9 atoms first (minutes, gigabytes)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="claims"):
        parse_text(text, fmt)
    assert time.perf_counter() - t0 < 2


def test_a_cif_expanding_to_too_many_atoms_is_refused():
    rows = "\n".join(f"Cu{i} 0.{i:03d}1 0.2 0.3" for i in range(200))
    cif = (
        "data_x\n_cell_length_a 50\n_cell_length_b 50\n_cell_length_c 50\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        "_symmetry_space_group_name_H-M 'F m -3 m'\nloop_\n_atom_site_label\n"
        f"_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n{rows}\n"
    )
    with pytest.raises(ValueError, match="200 sites x 192 symmetry operations"):
        parse_text(cif, "cif")


def test_generated_structures_are_bounded_and_buildable():
    with pytest.raises(ConfigError, match="500000 atoms, more than 100000"):
        _cfg([{"generate": {"element": "Cu", "repeat": [50, 50, 50]}}])
    with pytest.raises(ConfigError, match=r"repeat\[0\]: must be <= 50"):
        _cfg([{"generate": {"element": "Cu", "repeat": [51, 1, 1]}}])
    with pytest.raises(ConfigError, match="lattice_constant: needed for H as diamond"):
        _cfg([{"generate": {"element": "H", "crystal": "diamond"}}])
    with pytest.raises(ConfigError, match="reference crystal of Fe is bcc: give crystal: bcc"):
        _cfg([{"generate": {"element": "Fe"}}])


def test_binary_crystals_are_built_from_two_species_on_their_sublattices():
    """zinc blende SiC (3C): Si on the origin's fcc sublattice, C a/4 (1, 1, 1) from it, every
    Si with four C neighbours at sqrt(3)/4 a; rock salt and CsCl put the second species at
    a/2 (1, 0, 0) and a/2 (1, 1, 1). Their regime is bulk-<crystal>; one-line errors name the
    fix."""
    from workflows.structures import initial_structures

    a = 4.36
    gen = {"elements": ["Si", "C"], "crystal": "zincblende", "lattice_constant": a}
    # EMT has no Si: LJ (any element) passes the labeler pre-flight that builds them
    cfg = _cfg(
        [{"generate": {**gen, "repeat": [1, 1, 1]}, "strain": [0.02]}], labeler={"name": "lj"}
    )
    assert cfg.structures[0].regime_name() == "bulk-zincblende-strained"
    (sic,) = initial_structures(cfg, StructurePolicy())
    assert sic.get_chemical_formula() == "C4Si4" and np.allclose(sic.cell.lengths(), 1.02 * a)
    si = [i for i, s in enumerate(sic.get_chemical_symbols()) if s == "Si"]
    c = [i for i, s in enumerate(sic.get_chemical_symbols()) if s == "C"]
    d = sic.get_all_distances(mic=True)
    assert np.allclose(d[np.ix_(si, c)], 1.02 * a * np.sqrt(3) / 4)  # each Si: four C bonds
    assert np.allclose(d[np.ix_(si, si)][~np.eye(4, dtype=bool)], 1.02 * a / np.sqrt(2))
    assert np.allclose(sic.get_scaled_positions()[c[0]] - sic.get_scaled_positions()[si[0]], 0.25)
    for crystal, species, shift in (
        ("rocksalt", ["Na", "Cl"], [0.5, 0, 0]),
        ("cesiumchloride", ["Cs", "Cl"], [0.5, 0.5, 0.5]),
    ):
        g = {"elements": species, "crystal": crystal, "lattice_constant": 4.1, "repeat": [1, 1, 1]}
        atoms = _cfg([{"generate": g}]).structures[0].generate.build()
        assert atoms.get_chemical_symbols()[:2] == species
        assert np.allclose(atoms.get_scaled_positions()[1] - atoms.get_scaled_positions()[0], shift)
    problems = {
        "generate: elements: crystal zincblende has two species: give elements: [A, B] "
        "(e.g. [Si, C]) instead of element": {**gen, "elements": None, "element": "Si"},
        "generate: lattice_constant: needed for SiC as zincblende (ASE has no reference "
        "lattice constant of a compound)": {**gen, "lattice_constant": None},
        "generate.elements: two different species, got [Si, Si]": {**gen, "elements": ["Si"] * 2},
        "generate: elements: two species need a binary crystal (zincblende, rocksalt, "
        "cesiumchloride), not diamond": {**gen, "crystal": "diamond"},
        "generate: give element (one species) or elements (two), not both": {**gen, "element": "C"},
        "generate.elements: unknown chemical symbol 'Xx'": {**gen, "elements": ["Si", "Xx"]},
    }
    for problem, g in problems.items():
        with pytest.raises(ConfigError) as exc:
            _cfg([{"generate": {k: v for k, v in g.items() if v is not None}}])
        assert str(exc.value).startswith(f"c.yaml: structures[0].{problem}"), str(exc.value)
        assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- local files
def test_a_local_structure_file_inside_the_data_directory_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    poscar = data_dir / "POSCAR"
    ase.io.write(poscar, bulk("Cu", cubic=True), format="vasp")
    cfg = copy.deepcopy(BASE)
    cfg["structures"] = [{"file": str(poscar)}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "c.yaml", data_dir=data_dir)
    assert "is inside the data directory" in str(exc.value) and "\n" not in str(exc.value)
    # the same file elsewhere is fine, and so is a link to it from outside (resolved)
    outside = tmp_path / "POSCAR"
    outside.write_bytes(poscar.read_bytes())
    cfg["structures"] = [{"file": "POSCAR"}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert load_config(tmp_path / "c.yaml", data_dir=data_dir).structures[0].file == str(
        outside.resolve()
    )
    (tmp_path / "link").symlink_to(poscar)
    cfg["structures"] = [{"file": "link", "format": "poscar"}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="inside the data directory"):
        load_config(tmp_path / "c.yaml", data_dir=data_dir)


def test_the_database_is_never_read_even_through_a_hard_link(tmp_path):
    from database import Store, sqlite_url

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = Store.from_url(sqlite_url(data_dir))
    try:
        os.link(data_dir / "pesflow.sqlite", tmp_path / "structures.db")
        policy = StructurePolicy.local(tmp_path, data_dir)
        with pytest.raises(ValueError, match="is the database"):
            read_file("structures.db", None, ":", policy)
    finally:
        store.close()


# --------------------------------------------------------------------------- API policy
@pytest.fixture
def imports(tmp_path):
    imp = tmp_path / "imports"
    (imp / "sub").mkdir(parents=True)
    ase.io.write(imp / "sub" / "cu.xyz", bulk("Cu", cubic=True), format="extxyz")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "pesflow.sqlite").write_bytes(b"SQLite format 3\x00")
    return imp, data_dir


def _api(imp, data_dir) -> StructurePolicy:
    return StructurePolicy(
        mode="api",
        data_dir=data_dir,
        db_files=(data_dir / "pesflow.sqlite",),
        import_dirs=(imp,),
    )


def test_api_files_come_only_from_import_directories_with_one_answer(imports, tmp_path):
    imp, data_dir = imports
    policy = _api(imp, data_dir)
    assert len(read_file("sub/cu.xyz", None, ":", policy)[0]) == 4
    assert len(read_file(str(imp / "sub" / "cu.xyz"), None, ":", policy)[0]) == 4
    os.symlink(data_dir / "pesflow.sqlite", imp / "db.xyz")
    os.mkfifo(imp / "fifo.xyz")
    (tmp_path / "outside.xyz").write_bytes((imp / "sub" / "cu.xyz").read_bytes())
    os.symlink(tmp_path / "outside.xyz", imp / "escape.xyz")
    refused = [
        str(data_dir / "pesflow.sqlite"),
        "db.xyz",  # a link into the data directory
        "fifo.xyz",
        "escape.xyz",  # a link out of the import directory
        "../outside.xyz",
        str(tmp_path / "outside.xyz"),
        "missing.xyz",
        "/etc/passwd",
        "sub",
        "",
    ]
    for path in refused:
        with pytest.raises(ValueError) as exc:
            read_file(path, "extxyz", ":", policy)
        assert str(exc.value) == NOT_IMPORTABLE, path
    no_imports = StructurePolicy(mode="api", data_dir=data_dir)
    with pytest.raises(ValueError, match="not an importable structure file"):
        read_file(str(imp / "sub" / "cu.xyz"), None, ":", no_imports)
