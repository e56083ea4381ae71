"""Selectors: which of an iteration's candidate frames get a DFT label.

An extension point: the :class:`Selector` protocol, the built-ins (``random``, ``max-first``,
``fps``, ``cluster-max``) and :data:`SELECTORS`, a :class:`~mlip_core.plugins.Registry` that also finds
out-of-tree selectors declared under the entry-point group ``pesflow.selectors``. A selector
declares what it ``needs`` (``"descriptors"``: :func:`mlip_core.descriptors.descriptor_matrix`
of the frames; ``"atoms"``: the frames) and the caller computes only that. Every implementation
must pass :func:`mlip_core.contract.check_selector`.

To add one: write a class with ``name``, ``needs`` and ``select`` (below) and declare it::

    [project.entry-points."pesflow.selectors"]
    my-selector = "my_package.select:MySelector"

then ``selection: {strategy: my-selector}`` in a campaign config uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .plugins import Registry

__all__ = [
    "NEEDS",
    "SELECTORS",
    "ClusterMaxSelector",
    "FarthestPointSelector",
    "MaxFirstSelector",
    "RandomSelector",
    "SelectionError",
    "Selector",
    "get_selector",
    "greedy_diverse",
    "register_selector",
]


class SelectionError(ValueError):
    """Bad input to a selection function (the message names the problem)."""


NEEDS = frozenset({"descriptors", "atoms"})
"""What a selector may ask the caller for."""


@runtime_checkable
class Selector(Protocol):
    """Picks at most ``max_n`` frames among candidates.

    ``select`` receives validated input from :func:`select_candidates`:
    ``candidates`` sorted unique frame indices, ``deviations`` finite for every candidate,
    ``descriptors`` either ``None`` or shape ``(n_frames, D)`` (never ``None`` when
    ``"descriptors" in needs`` or ``min_distance > 0``), ``atoms`` the frames themselves
    (``list[ase.Atoms]`` of length ``n_frames``, given when ``"atoms" in needs``, else
    ``None``). It returns frame indices in pick
    order: unique, a subset of ``candidates``, at most ``max_n``, and no two picked frames
    closer than ``min_distance`` in descriptor space. Given the same ``rng`` state it must
    return the same picks.
    """

    name: str
    needs: frozenset[str]  # a subset of NEEDS: what the caller must compute and pass

    def select(
        self,
        candidates: NDArray[np.intp],
        deviations: NDArray[np.float64],
        max_n: int,
        *,
        rng: np.random.Generator,
        descriptors: NDArray[np.float64] | None,
        min_distance: float,
        atoms: Sequence[Any] | None = None,
    ) -> NDArray[np.intp]:
        """Return the picked frame indices, in pick order."""
        ...


def greedy_diverse(
    order: NDArray[np.intp],
    max_n: int,
    descriptors: NDArray[np.float64] | None,
    min_distance: float,
) -> NDArray[np.intp]:
    """Walk ``order`` (frame indices); keep a frame unless it is within ``min_distance`` of a
    kept one in descriptor space, at most ``max_n``. The near-duplicate rule every selector
    must keep; a new selector orders its frames and calls this."""
    if min_distance <= 0 or descriptors is None:
        return np.asarray(order[:max_n], dtype=np.intp)
    kept: list[int] = []
    nearest = np.full(order.size, np.inf)  # distance of each ordered frame to the kept set
    x = descriptors[order]
    for pos in range(order.size):
        if len(kept) >= max_n:
            break
        if nearest[pos] < min_distance:
            continue
        kept.append(int(order[pos]))
        d = np.linalg.norm(x - x[pos], axis=1)
        np.minimum(nearest, d, out=nearest)
    return np.asarray(kept, dtype=np.intp)


class RandomSelector:
    """Uniformly random candidates (seeded), near-duplicates skipped."""

    name = "random"
    needs: frozenset[str] = frozenset()

    def select(
        self,
        candidates: NDArray[np.intp],
        deviations: NDArray[np.float64],
        max_n: int,
        *,
        rng: np.random.Generator,
        descriptors: NDArray[np.float64] | None,
        min_distance: float,
        atoms: Sequence[Any] | None = None,
    ) -> NDArray[np.intp]:
        """Random permutation of the candidates, then greedy de-duplication."""
        order = rng.permutation(candidates)
        return greedy_diverse(order, max_n, descriptors, min_distance)


class MaxFirstSelector:
    """Highest deviation first (ties: lower frame index first), near-duplicates skipped."""

    name = "max-first"
    needs: frozenset[str] = frozenset()

    def select(
        self,
        candidates: NDArray[np.intp],
        deviations: NDArray[np.float64],
        max_n: int,
        *,
        rng: np.random.Generator,
        descriptors: NDArray[np.float64] | None,
        min_distance: float,
        atoms: Sequence[Any] | None = None,
    ) -> NDArray[np.intp]:
        """Candidates sorted by decreasing deviation, then greedy de-duplication."""
        order = candidates[np.argsort(-deviations[candidates], kind="stable")]
        return greedy_diverse(order, max_n, descriptors, min_distance)


class FarthestPointSelector:
    """Farthest-point sampling in descriptor space, starting from the most uncertain frame.

    Each next pick maximises the Euclidean distance to the nearest already-picked frame
    (ties: higher deviation, then lower index). Sampling stops early when that distance
    drops below ``min_distance``: every remaining candidate is then a near-duplicate.
    """

    name = "fps"
    needs: frozenset[str] = frozenset({"descriptors"})

    def select(
        self,
        candidates: NDArray[np.intp],
        deviations: NDArray[np.float64],
        max_n: int,
        *,
        rng: np.random.Generator,
        descriptors: NDArray[np.float64] | None,
        min_distance: float,
        atoms: Sequence[Any] | None = None,
    ) -> NDArray[np.intp]:
        """Farthest-point order over the candidates, capped at ``max_n``."""
        if descriptors is None:
            raise SelectionError("the 'fps' selector needs descriptors")
        if max_n == 0 or candidates.size == 0:
            return np.zeros(0, dtype=np.intp)
        # Order candidates by (deviation desc, index asc) so argmax ties prefer uncertain.
        cand = candidates[np.argsort(-deviations[candidates], kind="stable")]
        x = descriptors[cand]
        picked = [0]
        nearest = np.linalg.norm(x - x[0], axis=1)
        nearest[0] = -np.inf
        while len(picked) < min(max_n, cand.size):
            k = int(np.argmax(nearest))
            if nearest[k] < min_distance or nearest[k] == -np.inf:
                break
            picked.append(k)
            np.minimum(nearest, np.linalg.norm(x - x[k], axis=1), out=nearest)
            nearest[picked] = -np.inf
        return cand[np.asarray(picked, dtype=np.intp)]


class ClusterMaxSelector:
    """Uncertainty and diversity in one batch: the most uncertain frame of each cluster.

    The candidates' standardised descriptors are split into ``min(max_n, n)`` clusters by
    k-means (``scipy.cluster.vq.kmeans``, the lowest-distortion of 10 seeded starts); each cluster gives its
    highest-deviation frame, and the picks are ordered by decreasing deviation and passed
    through :func:`greedy_diverse`. This is the "top uncertainty per cluster" batch mode of
    batch active learning (e.g. Zaverkin et al., Digital Discovery 1, 605 (2022), sec. 2.3,
    with the structure descriptor standing in for their gradient features): unlike
    max-first it does not spend a batch on near-copies of one uncertain event, unlike fps it
    does not pick a diverse but confident frame over an uncertain one in the same region.
    """

    name = "cluster-max"
    needs: frozenset[str] = frozenset({"descriptors"})

    def select(
        self,
        candidates: NDArray[np.intp],
        deviations: NDArray[np.float64],
        max_n: int,
        *,
        rng: np.random.Generator,
        descriptors: NDArray[np.float64] | None,
        min_distance: float,
        atoms: Sequence[Any] | None = None,
    ) -> NDArray[np.intp]:
        """The max-deviation frame of each of ``min(max_n, n)`` k-means clusters."""
        from scipy.cluster.vq import kmeans, vq

        if descriptors is None:
            raise SelectionError("the 'cluster-max' selector needs descriptors")
        k = min(max_n, candidates.size)
        if k == 0:
            return np.zeros(0, dtype=np.intp)
        x = descriptors[candidates]
        if k == candidates.size:
            labels = np.arange(k)
        else:
            scale = x.std(axis=0)
            z = x / np.where(scale > 0, scale, 1.0)
            codebook, _ = kmeans(z, k, iter=10, seed=rng)  # best of 10 starts
            labels, _ = vq(z, codebook)
            k = len(codebook)
        best = [
            candidates[members[np.argmax(deviations[candidates[members]])]]
            for members in (np.flatnonzero(labels == c) for c in range(k))
            if members.size
        ]
        picks = np.asarray(best, dtype=np.intp)
        order = picks[np.argsort(-deviations[picks], kind="stable")]
        return greedy_diverse(order, max_n, descriptors, min_distance)


def _check_needs(selector: Selector) -> None:
    unknown = set(selector.needs) - NEEDS
    if unknown:
        raise ValueError(
            f"selector {selector.name!r} needs {sorted(unknown)}; known: {sorted(NEEDS)}"
        )


SELECTORS: Registry[Selector] = Registry(
    "selection strategy",
    "pesflow.selectors",
    {
        "random": "mlip_core.selectors:RandomSelector",
        "max-first": "mlip_core.selectors:MaxFirstSelector",
        "fps": "mlip_core.selectors:FarthestPointSelector",
        "cluster-max": "mlip_core.selectors:ClusterMaxSelector",
    },
    Selector,
    _check_needs,
)


def register_selector(selector: Selector, *, replace: bool = False) -> Selector:
    """Add a selector to the registry under ``selector.name`` in this process (returns it).
    Raises :class:`~mlip_core.plugins.PluginError` (a ``ValueError``) on a taken name or an
    object that is not a :class:`Selector`."""
    return SELECTORS.register(getattr(selector, "name", ""), selector, replace=replace)


def get_selector(name: str) -> Selector:
    """The selector called ``name`` (built-in, registered or an entry point); raises
    :class:`~mlip_core.plugins.PluginError` for an unknown name."""
    return SELECTORS.get(name)
