"""Tests for mlip_core.selection: trust window, geometry sanity and the selector contract."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from mlip_core.calibration import Calibration
from mlip_core.descriptors import descriptor_matrix
from mlip_core.selection import (
    SELECTORS,
    Selector,
    TrustWindow,
    adaptive_lower_level,
    classify,
    get_selector,
    register_selector,
    select_candidates,
    selection_summary,
)
from structure_checks.geometry import geometry_problems as check_geometry
from structure_checks.geometry import min_interatomic_distance

# ----------------------------------------------------------------------------- classify


def test_classify_edges_are_exact() -> None:
    x = [0.0, 0.0999999, 0.1, 0.2, 0.2999999, 0.3, 5.0, np.nan, np.inf]
    got = classify(x, 0.1, 0.3).tolist()
    assert got == [
        "accurate",
        "accurate",
        "candidate",
        "candidate",
        "candidate",
        "failed",
        "failed",
        "failed",
        "failed",
    ]


def test_classify_keeps_shape_and_counts() -> None:
    x = np.array([[0.05, 0.2], [0.4, np.nan]])
    labels = classify(x, 0.1, 0.3)
    assert labels.shape == (2, 2)
    assert selection_summary(labels.ravel()) == {"accurate": 1, "candidate": 1, "failed": 2}


def test_classify_infinite_hi_never_fails_finite_values() -> None:
    assert classify([0.0, 1e9, np.nan], 0.1, np.inf).tolist() == ["accurate", "candidate", "failed"]


@pytest.mark.parametrize(
    ("lo", "hi", "match"),
    [
        (0.3, 0.1, "lo < hi"),
        (0.2, 0.2, "lo < hi"),
        (-0.1, 0.3, "lo must be >= 0"),
        (0.1, -0.3, "hi must be >= 0"),
        (np.nan, 0.3, "lo must be a number"),
        (0.1, np.nan, "hi must be a number"),
        (np.inf, np.inf, "lo must be finite"),
    ],
)
def test_classify_and_window_validate(lo: float, hi: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classify([0.1], lo, hi)
    with pytest.raises(ValueError, match=match):
        TrustWindow(lo, hi)


def test_trust_window_classify_and_from_calibration() -> None:
    w = TrustWindow(0.05, 0.25, relative=True)
    assert w.classify([0.01, 0.05, 0.25]).tolist() == ["accurate", "candidate", "failed"]
    cal = Calibration(method="scale", scale=4.0)
    w2 = TrustWindow.from_error_tolerances(cal, lo_error=0.2, hi_error=1.0)
    assert (w2.lo, w2.hi, w2.relative) == (pytest.approx(0.05), pytest.approx(0.25), False)


# ----------------------------------------------------------------------------- geometry


def test_adaptive_lower_level_keeps_the_candidate_band_on_what_the_committee_produces() -> None:
    # issue 16: lo = 0.05 below every deviation made 58-94 % of frames candidates
    rng = np.random.default_rng(0)
    dev = np.r_[rng.uniform(0.06, 0.3, 1000), np.nan, 0.9, 1.5]  # 2 frames above hi
    lo_eff = adaptive_lower_level(dev, 0.05, 0.8, 0.25)
    share = np.mean(classify(dev[np.isfinite(dev) & (dev < 0.8)], lo_eff, 0.8) == "candidate")
    assert 0.24 <= share <= 0.26 and lo_eff > 0.05
    # a lo above the quantile stands; fraction 1 and no frames below hi change nothing
    assert adaptive_lower_level(dev, 0.29, 0.8, 0.25) == 0.29
    assert adaptive_lower_level(dev, 0.05, 0.8, 1.0) == 0.05
    assert adaptive_lower_level([0.9, np.nan], 0.05, 0.8, 0.25) == 0.05
    with pytest.raises(ValueError, match="fraction must be in"):
        adaptive_lower_level(dev, 0.05, 0.8, 0.0)
    with pytest.raises(ValueError, match="lo < hi"):
        adaptive_lower_level(dev, 0.9, 0.8, 0.5)


def test_clean_crystal_and_molecule_have_no_problems() -> None:
    assert check_geometry(bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)) == []
    assert check_geometry(bulk("Cu", "fcc", a=3.61)) == []  # primitive: 60 deg angles are fine
    assert check_geometry(molecule("H2O")) == []  # non-periodic, no cell


def test_too_close_pair_through_periodic_boundary_is_found() -> None:
    # Two atoms 0.2 Å apart only through the periodic boundary (9.8 Å apart in the cell).
    a = Atoms("Cu2", positions=[[0.1, 5, 5], [9.9, 5, 5]], cell=[10, 10, 10], pbc=True)
    problems = check_geometry(a, min_distance=0.5, covalent_factor=None, max_volume_per_atom=1e4)
    assert len(problems) == 1
    assert (
        "atoms too close" in problems[0]
        and "atom 0 (Cu) is 0.200 Å from atom 1 (Cu)" in problems[0]
    )
    d, i, j = min_interatomic_distance(a)
    assert d == pytest.approx(0.2) and {i, j} == {0, 1}
    a.pbc = False
    assert check_geometry(a, min_distance=0.5, covalent_factor=None) == []


def test_atom_too_close_to_its_own_image() -> None:
    a = Atoms("H", positions=[[0, 0, 0]], cell=[0.4, 5, 5], pbc=True)
    d, i, j = min_interatomic_distance(a)
    assert (d, i, j) == (pytest.approx(0.4), 0, 0)
    assert any("atom 0 (H) is 0.400 Å from its own periodic image" in p for p in check_geometry(a))
    assert min_interatomic_distance(bulk("Cu", "fcc", a=3.61), cutoff=2.0) is None


def test_covalent_factor_is_species_aware() -> None:
    # 1.0 Å is a fine O-H bond but a collapsed Cu-Cu contact.
    oh = Atoms("OH", positions=[[0, 0, 0], [1.0, 0, 0]])
    cucu = Atoms("Cu2", positions=[[0, 0, 0], [1.0, 0, 0]])
    assert check_geometry(oh, covalent_factor=0.5) == []
    problems = check_geometry(cucu, covalent_factor=0.5)
    assert len(problems) == 1 and "from atom 1 (Cu) (minimum allowed 1.320 Å)" in problems[0]


def test_nan_positions_reported_with_indices() -> None:
    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    a.positions[2, 1] = np.nan
    assert check_geometry(a) == ["non-finite positions for atoms [2]"]


def test_the_lattice_is_judged_not_its_representation_and_volume_bounds() -> None:
    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    tilted = a.copy()  # gamma 14 deg: the same fcc lattice, a tilted cell
    tilted.set_cell([a.cell[0], a.cell[1] + 4 * a.cell[0], a.cell[2]], scale_atoms=False)
    tilted.wrap()
    assert tilted.cell.angles()[2] < 15 and check_geometry(tilted) == []
    collapsed = a.copy()  # a lattice with a 0.9 Å period: caught as atoms too close
    collapsed.set_cell([[3.61, 0, 0], [3.5, 0.9, 0], [0, 0, 3.61]], scale_atoms=True)
    problems = check_geometry(collapsed)
    assert problems and {p.reason for p in problems} == {"atoms too close"}
    assert not check_geometry(collapsed, min_distance=0.0, covalent_factor=None)
    primitive = bulk("Cu", "fcc", a=3.61)  # its reduced cell has 60 deg angles
    assert check_geometry(primitive) == []
    sheared = check_geometry(primitive, max_cell_skew_deg=20.0)
    assert {p.reason for p in sheared} == {"lattice too sheared"} and "Niggli" in sheared[0]
    dense = a.copy()
    dense.set_cell(a.cell * 0.5, scale_atoms=True)  # 1.47 Å^3 per atom
    problems = check_geometry(dense, min_distance=0.0, covalent_factor=None)
    assert problems == [p for p in problems if "below min_volume_per_atom" in p] and problems
    sparse = a.copy()
    sparse.set_cell(a.cell * 4.0, scale_atoms=True)
    assert any("above max_volume_per_atom" in p for p in check_geometry(sparse))


# ----------------------------------------------------------------------------- selectors


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """40 frames: deviations, candidate mask, 2-D 'descriptors' in 8 tight clusters 5 apart,
    and each frame's cluster label."""
    rng = np.random.default_rng(11)
    n = 40
    dev = rng.uniform(0.0, 1.0, size=n)
    dev[[3, 17]] = np.nan  # failed frames (not candidates)
    mask = (dev >= 0.2) & (dev < 0.9)
    centres = 5.0 * np.array([[x, y] for x in range(4) for y in range(2)], dtype=float)
    label = rng.integers(0, 8, size=n)
    desc = centres[label] + rng.normal(scale=0.01, size=(n, 2))
    return dev, mask, desc, label


STRATEGIES = SELECTORS.names()


def test_all_builtin_strategies_registered() -> None:
    assert set(STRATEGIES) >= {"random", "max-first", "fps", "cluster-max"}
    for name in STRATEGIES:
        assert isinstance(get_selector(name), Selector)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_n", [0, 1, 5, 100])
@pytest.mark.parametrize("min_distance", [0.0, 1.0])
def test_selector_contract(pool, strategy: str, max_n: int, min_distance: float) -> None:
    """Every registered selector: <= max_n unique candidate indices, diverse, deterministic."""
    dev, mask, desc, _ = pool
    picks = select_candidates(
        mask, dev, max_n, strategy, seed=5, descriptors=desc, min_distance=min_distance
    )
    assert picks.dtype == np.intp and picks.ndim == 1
    assert len(picks) <= max_n
    assert len(set(picks.tolist())) == len(picks)
    assert np.all(mask[picks]), "picked a non-candidate"
    again = select_candidates(
        mask, dev, max_n, strategy, seed=5, descriptors=desc, min_distance=min_distance
    )
    np.testing.assert_array_equal(picks, again)
    # index input is equivalent to mask input
    by_index = select_candidates(
        np.flatnonzero(mask),
        dev,
        max_n,
        strategy,
        seed=5,
        descriptors=desc,
        min_distance=min_distance,
    )
    np.testing.assert_array_equal(picks, by_index)
    if min_distance > 0 and len(picks) > 1:
        d = np.linalg.norm(desc[picks][:, None] - desc[picks][None], axis=-1)
        assert d[np.triu_indices(len(picks), 1)].min() >= min_distance
    if min_distance == 0 and max_n > 0:
        assert len(picks) == min(max_n, int(mask.sum())), "a cap alone must fill up to max_n"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_selector_contract_no_candidates(pool, strategy: str) -> None:
    dev, _, desc, _ = pool
    picks = select_candidates(np.zeros(len(dev), bool), dev, 5, strategy, seed=0, descriptors=desc)
    assert picks.size == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_selector_contract_dedup_keeps_one_per_cluster(pool, strategy: str) -> None:
    dev, mask, desc, label = pool
    picks = select_candidates(mask, dev, 100, strategy, seed=1, descriptors=desc, min_distance=1.0)
    # the clusters are 5 apart and 0.01 wide: exactly one pick per occupied cluster
    assert sorted(label[picks].tolist()) == sorted(set(label[mask].tolist()))


def test_random_depends_on_seed_and_is_uniformish(pool) -> None:
    dev, mask, _, _ = pool
    a = select_candidates(mask, dev, 5, "random", seed=1)
    b = select_candidates(mask, dev, 5, "random", seed=2)
    assert a.tolist() != b.tolist()
    counts = np.zeros(len(dev))
    rng = np.random.default_rng(0)
    for _ in range(400):
        counts[select_candidates(mask, dev, 5, "random", seed=rng)] += 1
    cand = np.flatnonzero(mask)
    assert counts[~mask].sum() == 0
    expected = 400 * 5 / cand.size
    assert np.all(np.abs(counts[cand] - expected) < 0.5 * expected)


def test_max_first_orders_by_deviation_with_stable_ties() -> None:
    dev = np.array([0.5, 0.9, 0.5, 0.7, 0.95])
    mask = np.array([True, True, True, True, False])
    assert select_candidates(mask, dev, 3, "max-first").tolist() == [1, 3, 0]
    assert select_candidates(mask, dev, 10, "max-first").tolist() == [1, 3, 0, 2]


def test_fps_starts_at_most_uncertain_and_goes_far() -> None:
    # points on a line at 0, 1, 2, 10; most uncertain is at 1.
    desc = np.array([[0.0], [1.0], [2.0], [10.0]])
    dev = np.array([0.3, 0.8, 0.3, 0.3])
    picks = select_candidates(np.ones(4, bool), dev, 3, "fps", descriptors=desc)
    assert picks.tolist() == [1, 3, 0]  # then 0 and 2 tie at distance 1: more uncertain/lower idx


def test_fps_stops_at_duplicates_threshold() -> None:
    desc = np.array([[0.0], [0.1], [0.2], [5.0]])
    dev = np.array([0.5, 0.4, 0.3, 0.2])
    picks = select_candidates(np.ones(4, bool), dev, 10, "fps", descriptors=desc, min_distance=0.5)
    assert picks.tolist() == [0, 3]


def test_fps_covers_space_better_than_max_first(pool) -> None:
    dev, mask, desc, _ = pool
    fps = select_candidates(mask, dev, 6, "fps", descriptors=desc)
    top = select_candidates(mask, dev, 6, "max-first")

    def coverage(picks: np.ndarray) -> float:  # worst distance from a candidate to the picks
        c = desc[mask]
        return float(np.linalg.norm(c[:, None] - desc[picks][None], axis=-1).min(1).max())

    assert coverage(fps) <= coverage(top)


def test_cluster_max_takes_the_most_uncertain_frame_of_each_region() -> None:
    # four well-separated regions of 30 frames; one region holds the 20 most uncertain
    # frames: max-first spends the whole batch there, fps takes confident frames, and
    # cluster-max takes each region's most uncertain frame
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    region = np.repeat(np.arange(4), 30)
    desc = centres[region] + rng.normal(scale=0.5, size=(120, 2))
    dev = rng.uniform(0.1, 0.2, 120)
    dev[:20] = rng.uniform(0.5, 0.9, 20)  # region 0
    mask = np.ones(120, bool)
    picks = select_candidates(mask, dev, 4, "cluster-max", descriptors=desc, seed=0)
    assert sorted(region[picks].tolist()) == [0, 1, 2, 3]
    for p in picks:
        assert dev[p] == dev[region == region[p]].max()
    assert dev[picks].tolist() == sorted(dev[picks], reverse=True)
    top = select_candidates(mask, dev, 4, "max-first")
    assert set(region[top].tolist()) == {0}
    again = select_candidates(mask, dev, 4, "cluster-max", descriptors=desc, seed=0)
    assert again.tolist() == picks.tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "greedy"}, "unknown selection strategy 'greedy'"),
        ({"strategy": "fps", "descriptors": None}, "needs descriptors"),
        ({"min_distance": 0.5, "descriptors": None}, "needs descriptors"),
        ({"max_n": -1}, "max_n"),
        ({"candidates": np.array([0, 0])}, "duplicates"),
        ({"candidates": np.array([0, 7])}, r"out of range \[0, 5\): \[7\]"),
        ({"candidates": np.array([True, False])}, "candidate mask has shape"),
        ({"candidates": np.array([1, 2])}, "non-finite deviation: frames \\[2\\]"),
        ({"descriptors": np.zeros((4, 2))}, "descriptors must have shape"),
        ({"candidates": np.array([0.5])}, "integer indices"),
    ],
)
def test_select_candidates_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "candidates": np.array([0, 1]),
        "deviations": np.array([0.1, 0.2, np.nan, 0.4, 0.5]),
        "max_n": 2,
        "strategy": "max-first",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        select_candidates(**args)


def test_register_selector_checks_protocol_and_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_selector(get_selector("fps"))
    with pytest.raises(ValueError, match="does not implement"):
        register_selector(object())  # type: ignore[arg-type]


def test_select_with_real_descriptors_drops_duplicate_frames() -> None:
    base = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    frames = []
    for k in range(6):
        a = base.copy()
        a.rattle(0.02 if k % 2 else 0.2, seed=k)  # odd frames: near-perfect crystal
        frames.append(a)
    frames.append(base.copy())  # a near-duplicate of the odd frames
    desc = descriptor_matrix(frames)
    dev = np.linspace(0.3, 0.1, len(frames))
    picks = select_candidates(
        np.ones(len(frames), bool), dev, 10, "max-first", descriptors=desc, min_distance=0.5
    )
    near_perfect = {1, 3, 5, 6}
    assert len(near_perfect & set(picks.tolist())) == 1
