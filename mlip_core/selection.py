"""Candidate selection: trust window, geometry sanity, capped and diverse picking.

Per frame the committee uncertainty ``x`` (max atomic force deviation, absolute in eV/Å
or relative) is classified by a trust window ``[lo, hi)``:

- ``accurate``  : ``x < lo``           (trusted, not labelled)
- ``candidate`` : ``lo <= x < hi``     (worth a DFT label)
- ``failed``    : ``x >= hi`` or NaN   (the model is lost there; stop the trajectory)

Candidates are then filtered for sane geometry (:func:`structure_checks.geometry.geometry_problems`) and
capped to
``max_n`` per iteration by a selector (:func:`select_candidates`), optionally dropping
near-duplicates by descriptor distance (:mod:`mlip_core.descriptors`).

Selectors are an extension point (:mod:`mlip_core.selectors`); every registered selector must
pass :func:`mlip_core.contract.check_selector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .selectors import SELECTORS, SelectionError, Selector, get_selector, register_selector

if TYPE_CHECKING:
    from mlip_core.calibration import Calibration

__all__ = [
    "ACCURATE",
    "CANDIDATE",
    "FAILED",
    "SELECTORS",
    "SelectionError",
    "Selector",
    "TrustWindow",
    "adaptive_lower_level",
    "classify",
    "get_selector",
    "register_selector",
    "select_candidates",
    "selection_summary",
]

ACCURATE = "accurate"
CANDIDATE = "candidate"
FAILED = "failed"


# --------------------------------------------------------------------------- trust window


def _check_window(lo: float, hi: float) -> None:
    for name, v in (("lo", lo), ("hi", hi)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or np.isnan(v):
            raise SelectionError(f"trust window {name} must be a number, got {v!r}")
        if v < 0:
            raise SelectionError(f"trust window {name} must be >= 0, got {v}")
    if np.isinf(lo):
        raise SelectionError("trust window lo must be finite")
    if not lo < hi:
        raise SelectionError(f"trust window needs lo < hi, got lo={lo}, hi={hi}")


def classify(values: ArrayLike, lo: float, hi: float) -> NDArray[np.str_]:
    """Classify uncertainties: ``accurate`` if x < lo, ``candidate`` if lo <= x < hi,
    ``failed`` if x >= hi or x is NaN.

    Args:
        values: per-frame uncertainties (any shape).
        lo: lower threshold (>= 0, finite).
        hi: upper threshold (> lo; may be ``inf`` for "never stop").

    Returns:
        String array of the same shape as ``values``.
    """
    _check_window(lo, hi)
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, FAILED, dtype="<U9")
    with np.errstate(invalid="ignore"):
        out[x < lo] = ACCURATE
        out[(x >= lo) & (x < hi)] = CANDIDATE
    return out


@dataclass(frozen=True)
class TrustWindow:
    """Thresholds on the committee uncertainty.

    Attributes:
        lo: below it a frame is trusted (``accurate``).
        hi: at or above it the model is lost (``failed``): MD walkers stop.
        relative: the thresholds apply to the relative deviation
            (``mlip_core.uncertainty.max_force_deviation(..., relative=True)``,
            dimensionless) instead of the absolute one (eV/Å).
    """

    lo: float
    hi: float
    relative: bool = False

    def __post_init__(self) -> None:
        _check_window(self.lo, self.hi)

    def classify(self, values: ArrayLike) -> NDArray[np.str_]:
        """:func:`classify` with this window's thresholds."""
        return classify(values, self.lo, self.hi)

    @classmethod
    def from_error_tolerances(
        cls, calibration: Calibration, lo_error: float, hi_error: float
    ) -> TrustWindow:
        """Window on the raw (absolute) deviation from tolerances on the true force error.

        ``lo``/``hi`` are the smallest deviations whose calibrated error reaches
        ``lo_error``/``hi_error`` (eV/Å), via :meth:`Calibration.deviation_for`.
        """
        lo = calibration.deviation_for(lo_error)
        hi = calibration.deviation_for(hi_error)
        return cls(lo=lo, hi=hi, relative=False)


def adaptive_lower_level(values: ArrayLike, lo: float, hi: float, fraction: float) -> float:
    """The lower trust level raised so that at most ``fraction`` of the frames below ``hi``
    are candidates (DP-GEN's adaptive trust level, ``model_devi_adapt_trust_lo`` with
    ``model_devi_perc_candi_f``, turned the other way: there it guarantees a minimum number of
    candidates; here it keeps the candidate band on the deviations the current committee
    actually produces when ``lo`` sits below all of them and would make every frame one).

    Args:
        values: per-frame uncertainties; NaN and frames at or above ``hi`` are ignored.
        lo, hi: the configured window (checked as by :func:`classify`).
        fraction: share of the frames below ``hi`` that may stay candidates, in (0, 1].

    Returns:
        ``max(lo, q)`` where ``q`` is the ``1 - fraction`` quantile (numpy's "higher"
        method: a deviation some frame has) of the frames below ``hi``; ``lo`` if there are
        none. Never above ``hi``.
    """
    _check_window(lo, hi)
    if not 0.0 < fraction <= 1.0:
        raise SelectionError(f"fraction must be in (0, 1], got {fraction!r}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        below = x[np.isfinite(x) & (x < hi)]
    if below.size == 0 or fraction == 1.0:
        return float(lo)
    q = float(np.quantile(below, 1.0 - fraction, method="higher"))
    return float(min(max(lo, q), hi))


# --------------------------------------------------------------------------- geometry


def _candidate_indices(candidates: ArrayLike, n_frames: int) -> NDArray[np.intp]:
    c = np.asarray(candidates)
    if c.dtype == bool:
        if c.shape != (n_frames,):
            raise SelectionError(
                f"candidate mask has shape {c.shape}, expected ({n_frames},) like deviations"
            )
        return np.flatnonzero(c).astype(np.intp)
    if c.size == 0:
        return np.zeros(0, dtype=np.intp)
    if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer):
        raise SelectionError(
            f"candidates must be a boolean mask or 1-D integer indices, got dtype {c.dtype}, "
            f"shape {c.shape}"
        )
    out_of_range = c[(c < 0) | (c >= n_frames)]
    if out_of_range.size:
        raise SelectionError(
            f"candidate indices out of range [0, {n_frames}): {out_of_range[:10].tolist()}"
        )
    uniq = np.unique(c)
    if uniq.size != c.size:
        raise SelectionError("candidate indices contain duplicates")
    return uniq.astype(np.intp)


def select_candidates(
    candidates: ArrayLike,
    deviations: ArrayLike,
    max_n: int,
    strategy: str = "max-first",
    *,
    seed: int | np.random.Generator | None = None,
    descriptors: ArrayLike | None = None,
    min_distance: float = 0.0,
    atoms: Sequence[Any] | None = None,
) -> NDArray[np.intp]:
    """Pick at most ``max_n`` frames to label among the candidates.

    Args:
        candidates: boolean mask over frames, or integer frame indices.
        deviations: per-frame uncertainty, shape ``(n_frames,)``; must be finite for
            candidates (other frames may be NaN).
        max_n: cap on the number of picks (>= 0).
        strategy: a registered selector name: ``"random"``, ``"max-first"``, ``"fps"``.
        seed: integer seed or numpy ``Generator`` (``None``: fresh entropy; only the
            ``random`` strategy uses randomness).
        descriptors: per-frame structure descriptors, shape ``(n_frames, D)``
            (:func:`mlip_core.descriptors.descriptor_matrix`); required by ``fps`` and by
            near-duplicate avoidance.
        min_distance: frames closer than this (Euclidean descriptor distance) to an
            already-picked frame are skipped; 0 disables it.
        atoms: the frames (``n_frames`` ASE ``Atoms``); required by selectors that need them.

    Returns:
        Picked frame indices (``np.intp``) in pick order.
    """
    dev = np.asarray(deviations, dtype=np.float64)
    if dev.ndim != 1:
        raise SelectionError(f"deviations must be 1-D (one per frame), got shape {dev.shape}")
    n_frames = dev.size
    if isinstance(max_n, bool) or not isinstance(max_n, (int, np.integer)) or max_n < 0:
        raise SelectionError(f"max_n must be a non-negative integer, got {max_n!r}")
    if not np.isfinite(min_distance) or min_distance < 0:
        raise SelectionError(f"min_distance must be finite and >= 0, got {min_distance!r}")
    selector = get_selector(strategy)
    cand = _candidate_indices(candidates, n_frames)
    bad = cand[~np.isfinite(dev[cand])]
    if bad.size:
        raise SelectionError(f"candidates with non-finite deviation: frames {bad[:10].tolist()}")
    desc: NDArray[np.float64] | None = None
    if descriptors is not None:
        desc = np.asarray(descriptors, dtype=np.float64)
        if desc.ndim != 2 or desc.shape[0] != n_frames:
            raise SelectionError(
                f"descriptors must have shape (n_frames={n_frames}, D), got {desc.shape}"
            )
        if not np.all(np.isfinite(desc[cand])):
            raise SelectionError("descriptors of candidate frames contain NaN/inf")
    elif "descriptors" in selector.needs:
        raise SelectionError(f"strategy {strategy!r} needs descriptors")
    elif min_distance > 0:
        raise SelectionError("near-duplicate avoidance (min_distance > 0) needs descriptors")
    if "atoms" in selector.needs and (atoms is None or len(atoms) != n_frames):
        raise SelectionError(f"strategy {strategy!r} needs the {n_frames} frames (atoms=)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    picked = selector.select(
        cand,
        dev,
        int(max_n),
        rng=rng,
        descriptors=desc,
        min_distance=float(min_distance),
        atoms=atoms if "atoms" in selector.needs else None,
    )
    return np.asarray(picked, dtype=np.intp)


def selection_summary(labels: Sequence[str]) -> dict[str, int]:
    """Counts of ``accurate`` / ``candidate`` / ``failed`` in a classification."""
    arr = np.asarray(labels)
    return {k: int(np.sum(arr == k)) for k in (ACCURATE, CANDIDATE, FAILED)}
