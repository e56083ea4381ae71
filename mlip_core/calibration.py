"""Calibrated committee uncertainty: from a raw deviation to the force error it stands for.

A committee's spread underestimates the true error (1.6-2.2x by regime, issue 16). Frames whose
labels are known give pairs (max-atom deviation, max-atom true error); :func:`fit_calibration`
turns them into a :class:`Calibration` (median scale, isotonic map, or split-conformal bound
with a stated coverage); :class:`RegimeCalibration` keeps one per regime with a pooled
fallback; :func:`coverage_report` measures on unseen frames how often the bound held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression

from mlip_core.uncertainty import spearman

__all__ = [
    "CALIBRATION_METHODS",
    "Calibration",
    "CalibrationError",
    "RegimeCalibration",
    "coverage_report",
    "fit_calibration",
    "fit_regime_calibration",
]


CALIBRATION_METHODS = ("scale", "isotonic", "conformal")


class CalibrationError(ValueError):
    """Bad input to :func:`fit_calibration` or :meth:`Calibration.from_dict`."""


def _clean_pairs(
    deviations: ArrayLike, errors: ArrayLike, min_points: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(deviations, dtype=np.float64)
    y = np.asarray(errors, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise CalibrationError(
            f"deviations and errors must be 1-D, got shapes {x.shape} and {y.shape}"
        )
    if x.shape != y.shape:
        raise CalibrationError(
            f"deviations and errors must have the same length, got {x.size} and {y.size}"
        )
    for name, arr in (("deviations", x), ("errors", y)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise CalibrationError(f"{name} contain NaN/inf at indices {bad[:10].tolist()}")
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise CalibrationError(
                f"{name} must be non-negative, negative at indices {neg[:10].tolist()}"
            )
    if x.size < min_points:
        raise CalibrationError(
            f"too few points to fit a calibration: {x.size} < min_points={min_points}"
        )
    return x, y


@dataclass(frozen=True)
class Calibration:
    """Map from a predicted max force deviation (eV/Å) to an expected max force error (eV/Å).

    ``method == "scale"`` or ``"conformal"``: ``error = scale * deviation`` (a conformal scale
    is an upper bound that holds with probability ``coverage``, see :func:`fit_calibration`).
    ``method == "isotonic"``: a non-decreasing piecewise-linear map through the knots
    ``(x, y)``, flat outside ``[x[0], x[-1]]``.

    Build one with :func:`fit_calibration`; store it with :meth:`to_dict` (plain JSON types).
    """

    method: str
    scale: float | None = None
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    n_points: int = 0
    spearman: float | None = None
    coverage: float | None = None

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise CalibrationError(
                f"unknown calibration method {self.method!r}; expected one of {CALIBRATION_METHODS}"
            )
        if self.coverage is not None and not 0.0 < self.coverage < 1.0:
            raise CalibrationError(f"coverage must be in (0, 1), got {self.coverage!r}")
        if self.method == "conformal" and self.coverage is None:
            raise CalibrationError("a 'conformal' calibration needs its coverage")
        if self.method in ("scale", "conformal"):
            if self.scale is None or not np.isfinite(self.scale) or self.scale <= 0:
                raise CalibrationError(
                    f"a 'scale' calibration needs a finite positive scale, got {self.scale!r}"
                )
        else:
            xs = np.asarray(self.x, dtype=np.float64)
            ys = np.asarray(self.y, dtype=np.float64)
            if xs.size == 0 or xs.shape != ys.shape:
                raise CalibrationError(
                    f"an 'isotonic' calibration needs knots x, y of equal non-zero length, "
                    f"got {xs.size} and {ys.size}"
                )
            if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
                raise CalibrationError("isotonic calibration knots contain NaN/inf")
            if np.any(np.diff(xs) < 0) or np.any(np.diff(ys) < 0):
                raise CalibrationError("isotonic calibration knots must be non-decreasing")

    def __call__(self, deviation: ArrayLike) -> NDArray[np.float64] | float:
        """Expected max force error for ``deviation`` (scalar in -> float out)."""
        d = np.asarray(deviation, dtype=np.float64)
        if self.method != "isotonic":
            out = d * float(self.scale)  # type: ignore[arg-type]
        else:
            out = np.interp(d, np.asarray(self.x), np.asarray(self.y))
        return float(out) if np.ndim(out) == 0 else out

    def deviation_for(self, error: float) -> float:
        """Smallest deviation whose calibrated error reaches ``error`` (threshold inversion).

        Use it to turn an error tolerance (eV/Å) into a trust-window bound on the raw
        deviation. For an isotonic map that never reaches ``error`` this is ``inf``; if the
        map is already above ``error`` at its first knot it is 0.
        """
        if not np.isfinite(error) or error < 0:
            raise CalibrationError(f"error must be finite and non-negative, got {error!r}")
        if self.method != "isotonic":
            return float(error) / float(self.scale)  # type: ignore[arg-type]
        xs = np.asarray(self.x)
        ys = np.asarray(self.y)
        if error <= ys[0]:
            return 0.0 if error < ys[0] else float(xs[0])
        if error > ys[-1]:
            return float("inf")
        k = int(np.searchsorted(ys, error, side="left"))  # ys[k-1] < error <= ys[k]
        x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
        return float(x0 + (error - y0) * (x1 - x0) / (y1 - y0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation (round-trips through :meth:`from_dict`)."""
        return {
            "method": self.method,
            "scale": None if self.scale is None else float(self.scale),
            "x": [float(v) for v in self.x],
            "y": [float(v) for v in self.y],
            "n_points": int(self.n_points),
            "spearman": None if self.spearman is None else float(self.spearman),
            "coverage": None if self.coverage is None else float(self.coverage),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ``ValueError``."""
        if "method" not in data:
            raise CalibrationError("calibration dict is missing the key 'method'")
        unknown = set(data) - {"method", "scale", "x", "y", "n_points", "spearman", "coverage"}
        if unknown:
            raise CalibrationError(f"unknown calibration keys: {sorted(unknown)}")
        return cls(
            method=str(data["method"]),
            scale=None if data.get("scale") is None else float(data["scale"]),
            x=tuple(float(v) for v in data.get("x", ())),
            y=tuple(float(v) for v in data.get("y", ())),
            n_points=int(data.get("n_points", 0)),
            spearman=None if data.get("spearman") is None else float(data["spearman"]),
            coverage=None if data.get("coverage") is None else float(data["coverage"]),
        )


def fit_calibration(
    deviations: ArrayLike,
    errors: ArrayLike,
    method: str = "scale",
    *,
    min_points: int = 3,
    coverage: float = 0.9,
) -> Calibration:
    """Fit a deviation -> error map from labelled frames.

    Args:
        deviations: predicted max-atom force deviation per frame (eV/Å, >= 0).
        errors: true max-atom force error per frame, ``max_i |F_pred,i - F_ref,i|`` (eV/Å, >= 0).
        method: ``"scale"`` — one factor, the **median of error/deviation** over frames with
            a positive deviation. The median, not a least-squares slope, because the ratio
            is heavy-tailed (a few frames with a tiny deviation and a large error would
            dominate a least-squares fit) and because it makes the map exact in the sense
            "half the frames have an error above the calibrated value".
            ``"conformal"`` — split-conformal upper bound (Vovk et al. 2005; Angelopoulos &
            Bates, arXiv:2107.07511, sec. 1.1 and 2.2 with the normalised score
            ``error / deviation``): the scale is the ``ceil((n + 1) coverage)``-th smallest
            ratio of the ``n`` frames, so on a new frame exchangeable with them
            ``error <= scale * deviation`` holds with probability >= ``coverage``. Needs
            ``n >= 1 / (1 - coverage) - 1`` frames with a positive deviation (9 for 0.9).
            ``"isotonic"`` — the least-squares non-decreasing fit of error on deviation
            (``scipy.optimize.isotonic_regression``, pool-adjacent-violators; ties in deviation
            pooled first), interpolated
            linearly between knots and flat outside them.
        min_points: fewer labelled frames than this raise ``ValueError``.
        coverage: target coverage of the ``"conformal"`` bound, in (0, 1).

    Returns:
        A :class:`Calibration`, with ``spearman`` the rank correlation of the fitted data.
    """
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(
            f"unknown calibration method {method!r}; expected one of {CALIBRATION_METHODS}"
        )
    if min_points < 2:
        raise CalibrationError(f"min_points must be >= 2, got {min_points}")
    x, y = _clean_pairs(deviations, errors, min_points)
    rho = spearman(x, y)
    rho_out = None if np.isnan(rho) else rho
    if method == "conformal":
        return _conformal(x, y, coverage, rho_out)
    if method == "scale":
        pos = x > 0
        if not np.any(pos):
            raise CalibrationError("all deviations are zero: cannot fit a scale factor")
        scale = float(np.median(y[pos] / x[pos]))
        if scale <= 0:
            raise CalibrationError(
                "the median error/deviation ratio is zero (most errors are zero): "
                "cannot fit a scale factor"
            )
        return Calibration(method="scale", scale=scale, n_points=int(x.size), spearman=rho_out)

    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    ux, start, counts = np.unique(xs, return_index=True, return_counts=True)
    ymean = np.add.reduceat(ys, start) / counts
    fitted = isotonic_regression(ymean, weights=counts.astype(np.float64)).x
    keep = np.ones(ux.size, dtype=bool)
    if ux.size > 2:
        flat_prev = np.r_[False, fitted[1:] == fitted[:-1]]
        flat_next = np.r_[fitted[:-1] == fitted[1:], False]
        keep = ~(flat_prev & flat_next)
    return Calibration(
        method="isotonic",
        x=tuple(ux[keep].tolist()),
        y=tuple(fitted[keep].tolist()),
        n_points=int(x.size),
        spearman=rho_out,
    )


def _conformal(
    x: NDArray[np.float64], y: NDArray[np.float64], coverage: float, rho: float | None
) -> Calibration:
    if not 0.0 < coverage < 1.0:
        raise CalibrationError(f"coverage must be in (0, 1), got {coverage!r}")
    pos = x > 0
    ratios = np.sort(y[pos] / x[pos])
    n = ratios.size
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        raise CalibrationError(
            f"a {coverage:g} conformal bound needs at least {math.ceil(coverage / (1 - coverage) - 1e-9)}"
            f" frames with a positive deviation, got {n}"
        )
    scale = float(ratios[rank - 1])
    if scale <= 0:
        raise CalibrationError("the conformal quantile of error/deviation is zero")
    return Calibration(
        method="conformal", scale=scale, n_points=int(x.size), spearman=rho, coverage=coverage
    )


@dataclass(frozen=True)
class RegimeCalibration:
    """One :class:`Calibration` per regime, and a pooled one for the rest.

    Attributes:
        by_regime: regime name -> calibration fitted on that regime's frames only.
        pooled: fitted on every frame; used for regimes without their own (too few frames).
    """

    pooled: Calibration
    by_regime: dict[str, Calibration] = field(default_factory=dict)

    def for_regime(self, regime: str | None) -> Calibration:
        """The regime's own calibration, else the pooled one."""
        return self.by_regime.get(regime or "", self.pooled)

    def bound(self, deviations: ArrayLike, regimes: Sequence[str | None]) -> NDArray[np.float64]:
        """Calibrated max-atom force error (eV/Å) of each frame, shape ``(n,)``."""
        d = np.asarray(deviations, dtype=np.float64).reshape(-1)
        if len(regimes) != d.size:
            raise CalibrationError(f"{d.size} deviations but {len(regimes)} regimes")
        return np.array([float(self.for_regime(r)(v)) for v, r in zip(d, regimes, strict=True)])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (round-trips through :meth:`from_dict`)."""
        return {
            "pooled": self.pooled.to_dict(),
            "by_regime": {k: v.to_dict() for k, v in sorted(self.by_regime.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegimeCalibration:
        """Rebuild from :meth:`to_dict`; ``CalibrationError`` on a malformed dict."""
        if "pooled" not in data:
            raise CalibrationError("regime calibration dict is missing the key 'pooled'")
        by = data.get("by_regime") or {}
        return cls(
            pooled=Calibration.from_dict(data["pooled"]),
            by_regime={str(k): Calibration.from_dict(v) for k, v in by.items()},
        )


def fit_regime_calibration(
    deviations: ArrayLike,
    errors: ArrayLike,
    regimes: Sequence[str],
    *,
    method: str = "conformal",
    coverage: float = 0.9,
    min_points: int = 10,
) -> RegimeCalibration:
    """Fit a pooled calibration and one per regime that has ``min_points`` frames.

    Args:
        deviations: max-atom force deviation per frame, eV/Å, shape ``(n,)``.
        errors: max-atom true force error of the committee mean per frame, eV/Å.
        regimes: regime name per frame.
        method, coverage: as :func:`fit_calibration`.
        min_points: frames a regime needs for its own calibration (>= what the method needs:
            9 for a 0.9 conformal bound).

    Raises:
        CalibrationError: mismatched lengths, bad values, or too few frames for the pooled fit.
    """
    x = np.asarray(deviations, dtype=np.float64).reshape(-1)
    y = np.asarray(errors, dtype=np.float64).reshape(-1)
    if len(regimes) != x.size:
        raise CalibrationError(f"{x.size} deviations but {len(regimes)} regimes")
    pooled = fit_calibration(x, y, method, min_points=min_points, coverage=coverage)
    names = np.asarray([str(r) for r in regimes])
    by: dict[str, Calibration] = {}
    for name in sorted(set(names.tolist())):
        sel = names == name
        if int(sel.sum()) < min_points:
            continue
        try:
            by[name] = fit_calibration(
                x[sel], y[sel], method, min_points=min_points, coverage=coverage
            )
        except CalibrationError:
            continue  # e.g. all deviations zero: the pooled map stands in
    return RegimeCalibration(pooled=pooled, by_regime=by)


def coverage_report(
    calibration: RegimeCalibration,
    deviations: ArrayLike,
    errors: ArrayLike,
    regimes: Sequence[str],
) -> dict[str, dict[str, float | None]]:
    """How often ``error <= bound(deviation)`` held, per regime and ``"all"``.

    Measure it on frames the calibration was not fitted on (e.g. the next iteration's new
    labels): on the fitting frames a conformal bound covers at least its coverage by
    construction.

    Returns:
        ``{regime: {"n": frames, "covered": fraction in [0, 1], "target": coverage or None}}``.
    """
    y = np.asarray(errors, dtype=np.float64).reshape(-1)
    bound = calibration.bound(deviations, regimes)
    if y.shape != bound.shape:
        raise CalibrationError(f"{bound.size} deviations but {y.size} errors")
    names = np.asarray([str(r) for r in regimes])
    out: dict[str, dict[str, float | None]] = {}
    groups = {name: names == name for name in sorted(set(names.tolist()))}
    groups["all"] = np.ones(y.size, dtype=bool)
    for name, sel in groups.items():
        if not sel.any():
            continue
        cal = calibration.pooled if name == "all" else calibration.for_regime(name)
        out[name] = {
            "n": float(sel.sum()),
            "covered": float(np.mean(y[sel] <= bound[sel])),
            "target": cal.coverage,
        }
    return out
