"""Structure modifiers of the ``structures`` section: vacancies, interstitials, random alloys,
strained copies (workflows.config_modifiers), their regimes, seeds, state and refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms, FixBondLength

from workflows.config import ConfigError, parse_config
from workflows.config_modifiers import SourceModifiers, apply_modifiers, largest_empty_site
from workflows.structures import initial_structures

from ._campaigns import REDUCED

CU = {"element": "Cu", "lattice_constant": 3.61}


def config(*sources: dict, seed: int = 1, **exploration) -> object:
    data = copy.deepcopy(REDUCED)
    data["structures"] = list(sources)
    data["seed"] = seed
    data["validation"]["n_structures"] = 4 * len(sources)
    data["exploration"].update(exploration)
    return parse_config(data)


def build(*sources: dict, seed: int = 1) -> tuple[list[Atoms], list[str]]:
    regimes: list[str] = []
    return initial_structures(config(*sources, seed=seed), regimes=regimes), regimes


def test_vacancies_are_seeded_distinct_copies_with_their_regime() -> None:
    src = {"generate": {**CU, "repeat": [3, 3, 3]}, "vacancies": 2, "copies": 3}
    atoms, regimes = build(src)
    assert [len(a) for a in atoms] == [106] * 3 and regimes == ["bulk-fcc-vacancy"] * 3
    again, _ = build(src)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(atoms, again, strict=True))
    other, _ = build(src, seed=2)
    assert any(
        not np.array_equal(a.positions, b.positions) for a, b in zip(atoms, other, strict=True)
    )
    assert len({a.positions.tobytes() for a in atoms}) == 3  # the copies differ
    _, regimes = build({**src, "regime": "hot-vacancy"})
    assert regimes == ["hot-vacancy"] * 3  # the user's name wins


def test_interstitial_goes_to_the_octahedral_site_of_fcc() -> None:
    (a,), (regime,) = build({"generate": {**CU, "repeat": [2, 2, 2]}, "interstitials": 1})
    assert regime == "bulk-fcc-interstitial" and a.get_chemical_formula() == "Cu33"
    d = np.delete(a.get_distances(32, range(33), mic=True), 32)
    assert d.min() == pytest.approx(3.61 / 2, abs=0.01)  # octahedral: a/2 from 6 neighbours
    assert np.sum(d < 3.61 / 2 + 0.02) == 6
    _, dist, _ = largest_empty_site(bulk("Cu", "fcc", a=3.61, cubic=True))
    assert dist == pytest.approx(1.805, abs=0.01)


def test_interstitials_in_a_cell_too_small_are_refused_with_the_key() -> None:
    src = {"generate": {**CU, "cubic": False, "repeat": [1, 1, 1]}, "interstitials": 2}
    with pytest.raises(ConfigError, match=r"structures\[0\]\.interstitials: .* too small"):
        build(src)


def test_random_alloy_has_exact_counts_and_refuses_fractions_of_atoms() -> None:
    (a,), (regime,) = build({"generate": {**CU, "repeat": [3, 3, 3]}, "substitute": {"Au": 0.25}})
    assert regime == "bulk-fcc-alloy" and a.get_chemical_formula() == "Au27Cu81"
    with pytest.raises(ConfigError, match=r"substitute.Au: 0.3 of 32 atoms is 9.6 atoms.*0.28125"):
        config({"generate": {**CU, "repeat": [2, 2, 2]}, "substitute": {"Au": 0.3}})
    with pytest.raises(ConfigError, match=r"add up to 1\.2"):
        config({"generate": {**CU}, "substitute": {"Au": 0.6, "Ag": 0.6}})


def test_strains_give_one_copy_each_isotropic_shear_and_in_plane_for_slabs() -> None:
    bulk_src = {
        "generate": {**CU, "repeat": [2, 2, 2]},
        "strain": [-0.02, 0.03, [0, 0, 0, 0, 0, 0.04]],
    }
    atoms, regimes = build(bulk_src)
    v0 = (2 * 3.61) ** 3
    assert regimes == ["bulk-fcc-strained"] * 3
    assert atoms[0].get_volume() == pytest.approx(v0 * 0.98**3)
    assert atoms[1].get_volume() == pytest.approx(v0 * 1.03**3)
    assert atoms[2].cell.angles()[2] == pytest.approx(
        np.degrees(np.arccos(0.04 / (1 + 0.0004))), abs=1e-3
    )
    slab = {"generate": {**CU, "surface": [1, 1, 1], "repeat": [2, 2, 1]}, "strain": [0.02]}
    ref, _ = build({"generate": slab["generate"]})
    (s,), (regime,) = build(slab)
    assert regime == "surface-111-strained"
    assert s.cell.lengths()[:2] == pytest.approx(ref[0].cell.lengths()[:2] * 1.02)
    assert s.cell.lengths()[2] == pytest.approx(ref[0].cell.lengths()[2])  # vacuum unchanged
    with pytest.raises(ConfigError, match=r"Voigt strain .* fully periodic"):
        build({**slab, "strain": [[0.01, 0, 0, 0, 0, 0]]})


@pytest.mark.parametrize(
    ("src", "match"),
    [
        ({"vacancies": 32}, r"structures\[0\]: vacancies: 32 of a frame of 32 atoms"),
        ({"copies": 2}, "copies=2 without vacancies"),
        ({"strain": [0.5]}, "strain"),
        ({"substitute": {"Xx": 0.25}}, "unknown chemical symbol 'Xx'"),
        ({"interstitial_element": "H"}, "interstitial_element without interstitials"),
    ],
)
def test_bad_modifiers_are_one_line_with_the_key(src: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        config({"generate": {**CU, "repeat": [2, 2, 2]}, **src})
    assert "\n" not in str(err.value)


def test_state_follows_the_atoms_or_the_source_is_refused() -> None:
    """FixAtoms is renumbered and never loses an atom to a vacancy; moments follow the atoms,
    an interstitial takes the host's uniform moment; unknown states are refused."""
    host = bulk("Fe", "bcc", a=2.87, cubic=True) * (3, 3, 3)
    host.set_initial_magnetic_moments([2.2] * len(host))
    host.set_constraint(FixAtoms(indices=range(10)))
    rng = np.random.default_rng(0)
    (a,) = apply_modifiers([host], SourceModifiers(vacancies=5, interstitials=1), rng)
    fixed = a.constraints[0].get_indices()
    assert len(a) == 54 - 5 + 1 and list(fixed) == list(range(10))  # the fixed atoms stay
    assert np.allclose(a.positions[:10], host.positions[:10])
    assert np.allclose(a.get_initial_magnetic_moments(), 2.2)  # the inserted atom too
    with pytest.raises(ValueError, match="substitute: the frame has initial magmoms"):
        apply_modifiers([host], SourceModifiers(substitute={"Cr": 0.5}), rng)
    afm = host.copy()
    afm.set_initial_magnetic_moments([2.2, -2.2] * 27)
    with pytest.raises(ValueError, match="different initial magnetic moments"):
        apply_modifiers([afm], SourceModifiers(interstitials=1), rng)
    bond = host.copy()
    bond.set_constraint(FixBondLength(0, 1))
    with pytest.raises(ValueError, match="FixBondLengths constraint"):
        apply_modifiers([bond], SourceModifiers(vacancies=1), rng)


def test_file_sources_are_modified_and_the_preflight_sees_every_structure(monkeypatch) -> None:
    """A content source (two frames) with vacancies and copies: four structures, each checked
    by the physics pre-flight and the labeler's state check."""
    import io

    from ase.io import write

    import workflows.config_physics as physics

    frames = [bulk("Cu", "fcc", a=a, cubic=True) * (2, 2, 2) for a in (3.58, 3.64)]
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    seen: list[int] = []
    real = physics.structure_problems

    def spy(cfg, atoms_list, names=None):
        seen.append(len(atoms_list))
        return real(cfg, atoms_list, names)

    monkeypatch.setattr(physics, "structure_problems", spy)
    src = {"content": buf.getvalue(), "format": "extxyz", "vacancies": 1, "copies": 2}
    atoms, regimes = build(src)
    assert [len(a) for a in atoms] == [31] * 4 and seen == [4]
    assert regimes == ["content-vacancy"] * 4


def test_a_file_structure_is_cut_into_a_slab_then_modified() -> None:
    """An L1_2 Cu3Au cell given as content: slab (111), 3 layers, one vacancy. Moments follow
    the atoms through the cut. A generated source keeps its own generate.surface."""
    import io

    from ase.io import write

    cell = bulk("Cu", "fcc", a=3.75, cubic=True)
    cell.symbols[0] = "Au"
    buf = io.StringIO()
    write(buf, cell, format="extxyz")
    src = {"content": buf.getvalue(), "format": "extxyz"}
    cut = {"miller": [1, 1, 1], "layers": 3, "vacuum": 7.0}
    (slab,), (regime,) = build({**src, "slab": cut, "vacancies": 1})
    assert regime == "content-surface-111-vacancy"
    assert list(slab.pbc) == [True, True, False] and len(slab) == 11
    gap = slab.cell.lengths()[2] - np.ptp(slab.positions[:, 2])
    assert gap == pytest.approx(14.0, abs=0.01)
    cell.set_initial_magnetic_moments([0.5, 0, 0, 0])
    mods = SourceModifiers(slab=cut)
    (magnetic,) = apply_modifiers([cell], mods, np.random.default_rng(0))
    au = magnetic.numbers == 79
    assert au.sum() == 3 and np.all(magnetic.get_initial_magnetic_moments()[au] == 0.5)
    assert np.all(magnetic.get_initial_magnetic_moments()[~au] == 0)
    with pytest.raises(ConfigError, match=r"generate\.surface"):
        config({"generate": CU, "slab": cut})
