"""Contract checks every implementation of an ``mlip_core`` extension point must pass.

Shipped in the package (like torch-sim's model validator) so an out-of-tree implementation
runs the same checks as the built-ins, e.g. in its own test suite::

    from mlip_core.contract import check_selector
    check_selector(MySelector())

Each ``check_*`` raises ``AssertionError`` naming the broken rule and returns ``None`` when the
implementation holds. pesflow's own tests run them over every registered implementation
(``tests/mlip_core/test_extension_contracts.py``).

- :func:`check_selector`: selectors (:mod:`mlip_core.selectors`);
- :func:`check_committee_model`: a committee's ``predict`` (:class:`mlip_core.model.CommitteeModel`):
  shapes, translation / rotation / permutation invariance, F = -dE/dr, stress = dE/dstrain / V;
- :func:`check_model_backend`: model backends (:mod:`mlip_core.backends`): train, save, load;
- :func:`check_explorer`: explorers (:mod:`mlip_core.explorers`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .contract_explore import check_explorer
from .contract_model import check_committee_model, check_model_backend

__all__ = ["check_committee_model", "check_explorer", "check_model_backend", "check_selector"]


def _pool(seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """40 frames: deviations (two NaN), a candidate mask, 2-D descriptors in 8 tight clusters
    5 apart, each frame's cluster label, and 40 small Cu frames (for selectors that need atoms)."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    n = 40
    dev = rng.uniform(0.0, 1.0, size=n)
    dev[[3, 17]] = np.nan
    mask = (dev >= 0.2) & (dev < 0.9)
    centres = 5.0 * np.array([[x, y] for x in range(4) for y in range(2)], dtype=float)
    label = rng.integers(0, 8, size=n)
    desc = centres[label] + rng.normal(scale=0.01, size=(n, 2))
    base = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms = []
    for k in range(n):
        a = base.copy()
        a.rattle(0.02 + 0.01 * label[k], seed=k)
        atoms.append(a)
    return dev, mask, desc, label, atoms


def check_selector(selector: Any) -> None:
    """Check a selector against the :class:`mlip_core.selectors.Selector` contract.

    Rules: it is a ``Selector`` with known ``needs``; for caps 0, 1, 5, 100 and ``min_distance``
    0 and 1 it returns at most ``max_n`` unique ``np.intp`` indices of candidates only, the
    same for the same seed, mask and index input alike, fills up to ``max_n`` when only the
    cap binds, keeps picks at least ``min_distance`` apart in descriptor space (one per tight
    cluster), and picks nothing from no candidates.
    """
    from mlip_core.plugins import missing_members
    from mlip_core.selection import select_candidates
    from mlip_core.selectors import NEEDS, SELECTORS, Selector

    assert isinstance(selector, Selector), (
        f"{selector!r} does not implement Selector: lacks {missing_members(selector, Selector)}"
    )
    assert set(selector.needs) <= NEEDS, f"unknown needs {set(selector.needs) - NEEDS}"
    name = f"_contract_{selector.name}"
    SELECTORS.register(name, selector, replace=True)
    try:
        dev, mask, desc, label, atoms = _pool()
        kw: dict[str, Any] = {"descriptors": desc, "atoms": atoms}
        for max_n in (0, 1, 5, 100):
            for min_distance in (0.0, 1.0):
                picks = select_candidates(
                    mask, dev, max_n, name, seed=5, min_distance=min_distance, **kw
                )
                where = f"{selector.name} max_n={max_n} min_distance={min_distance}"
                assert picks.dtype == np.intp and picks.ndim == 1, f"{where}: not 1-D intp"
                assert len(picks) <= max_n, f"{where}: {len(picks)} picks > max_n"
                assert len(set(picks.tolist())) == len(picks), f"{where}: duplicate picks"
                assert np.all(mask[picks]), f"{where}: picked a non-candidate"
                again = select_candidates(
                    mask, dev, max_n, name, seed=5, min_distance=min_distance, **kw
                )
                assert np.array_equal(picks, again), f"{where}: not deterministic for a seed"
                by_index = select_candidates(
                    np.flatnonzero(mask), dev, max_n, name, seed=5, min_distance=min_distance, **kw
                )
                assert np.array_equal(picks, by_index), f"{where}: mask and index input differ"
                if min_distance > 0 and len(picks) > 1:
                    d = np.linalg.norm(desc[picks][:, None] - desc[picks][None], axis=-1)
                    assert d[np.triu_indices(len(picks), 1)].min() >= min_distance, (
                        f"{where}: two picks closer than min_distance"
                    )
                if min_distance == 0 and max_n > 0:
                    assert len(picks) == min(max_n, int(mask.sum())), (
                        f"{where}: a cap alone must fill up to max_n"
                    )
        picks = select_candidates(mask, dev, 100, name, seed=1, min_distance=1.0, **kw)
        assert sorted(label[picks].tolist()) == sorted(set(label[mask].tolist())), (
            f"{selector.name}: min_distance=1 must keep exactly one frame per tight cluster"
        )
        none = select_candidates(np.zeros(len(dev), bool), dev, 5, name, seed=0, **kw)
        assert none.size == 0, f"{selector.name}: picked frames from no candidates"
    finally:
        SELECTORS.unregister(name)
