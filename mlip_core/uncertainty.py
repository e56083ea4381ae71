"""Committee uncertainty metrics.

The one definition of the per-atom force deviation used everywhere in pesflow
(DP-GEN's ``max_devi_f``: population standard deviation over committee members):

    sigma_i = sqrt( mean_k |F_i^(k) - <F_i>|^2 ),      uncertainty = max_i sigma_i

The relative variant divides by the magnitude of the mean force plus ``eps`` so that
atoms under large forces are not flagged only for being under large forces.

Calibration (:func:`fit_calibration`, :class:`Calibration`) maps a raw committee deviation
to the expected max-atom force error, fitted on frames whose DFT labels are known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

__all__ = [
    "CALIBRATION_METHODS",
    "Calibration",
    "CalibrationError",
    "atomic_force_deviation",
    "energy_deviation",
    "fit_calibration",
    "frame_deviations",
    "max_devi_e",
    "max_devi_v",
    "max_force_deviation",
    "spearman",
]


def _as_member_forces(forces: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(forces, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"committee forces must have shape (K members, N atoms, 3), got {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise ValueError(
            f"a committee needs at least 2 members to measure deviation, got {arr.shape[0]}"
        )
    return arr


def atomic_force_deviation(
    forces: ArrayLike, *, relative: bool = False, eps: float = 1.0
) -> NDArray[np.float64]:
    """Per-atom force deviation ``sigma_i`` of a committee.

    Args:
        forces: member forces, shape ``(K, N, 3)`` in eV/Å.
        relative: divide by ``|<F_i>| + eps`` (dimensionless) instead of returning eV/Å.
        eps: regulariser of the relative variant, eV/Å.

    Returns:
        ``(N,)`` array: absolute deviation in eV/Å, or the relative deviation.
    """
    f = _as_member_forces(forces)
    mean = f.mean(axis=0)
    sigma = np.sqrt(((f - mean) ** 2).sum(axis=-1).mean(axis=0))
    if relative:
        if eps <= 0:
            raise ValueError(f"eps must be positive for the relative deviation, got {eps}")
        sigma = sigma / (np.linalg.norm(mean, axis=-1) + eps)
    return sigma


def max_force_deviation(forces: ArrayLike, *, relative: bool = False, eps: float = 1.0) -> float:
    """Max over atoms of :func:`atomic_force_deviation` (the frame's uncertainty)."""
    sigma = atomic_force_deviation(forces, relative=relative, eps=eps)
    if sigma.size == 0:
        raise ValueError("cannot measure the force deviation of a structure with no atoms")
    return float(sigma.max())


def energy_deviation(energies: ArrayLike) -> float:
    """Population standard deviation of the member energies, shape ``(K,)``, in eV."""
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    if e.size < 2:
        raise ValueError(f"a committee needs at least 2 members, got {e.size}")
    return float(e.std())


def max_devi_e(energies: ArrayLike, n_atoms: int) -> float:
    """Energy deviation per atom, eV/atom: population std over the members of E^(k)/N
    (DeePMD-kit's ``calc_model_devi_e`` on total energies per atom). ``energies`` ``(K,)`` eV."""
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be >= 1, got {n_atoms}")
    return energy_deviation(energies) / n_atoms


def max_devi_v(stresses: ArrayLike, volume: float, n_atoms: int) -> float:
    """Virial deviation per atom, eV/atom: the max over the 9 components of the population std
    over the members of the virial W = -sigma V divided by N (DeePMD-kit's
    ``calc_model_devi_v`` on virials per atom). ``stresses`` ``(K, 6)`` ASE Voigt eV/Å^3,
    ``volume`` Å^3."""
    from ase.stress import voigt_6_to_full_3x3_stress

    s = np.asarray(stresses, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 6 or s.shape[0] < 2:
        raise ValueError(f"member stresses must have shape (K >= 2, 6), got {s.shape}")
    if not volume > 0 or n_atoms < 1:
        raise ValueError(f"volume must be > 0 and n_atoms >= 1, got {volume}, {n_atoms}")
    virial = -voigt_6_to_full_3x3_stress(s).reshape(len(s), 9) * volume / n_atoms
    return float(virial.std(axis=0).max())


def frame_deviations(atoms: Any, results: Mapping[str, Any]) -> dict[str, float]:
    """``max_devi_e`` and ``max_devi_v`` (eV/atom) of a frame from a committee calculator's
    ``results`` (``energy_committee`` (K,), ``stress_committee`` (K, 6)); NaN where the
    calculator reports no member energies / stresses or the cell is not fully periodic."""
    n = len(atoms)
    e = results.get("energy_committee")
    st = results.get("stress_committee")
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.volume > 0
    return {
        "max_devi_e": max_devi_e(e, n) if e is not None else float("nan"),
        "max_devi_v": max_devi_v(st, atoms.cell.volume, n)
        if st is not None and periodic
        else float("nan"),
    }


# --------------------------------------------------------------------------------------
# Calibration: committee deviation -> expected max-atom force error
# --------------------------------------------------------------------------------------
#
# A committee's spread underestimates the true error (docs/decisions/0002-calibration.md).
# Once candidate frames are labelled their true max-atom force error is known, so the
# deviation -> error map can be fitted and stored with the model (checkpoint, database) to
# turn error tolerances into deviation thresholds.

CALIBRATION_METHODS = ("scale", "isotonic")


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


def _pav(y: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pool-adjacent-violators: weighted least-squares non-decreasing fit of ``y``."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        means.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w_new = weights[-2] + weights[-1]
            m_new = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w_new
            s_new = sizes[-2] + sizes[-1]
            del means[-1], weights[-1], sizes[-1]
            means[-1], weights[-1], sizes[-1] = m_new, w_new, s_new
    return np.repeat(np.asarray(means), np.asarray(sizes))


@dataclass(frozen=True)
class Calibration:
    """Map from a predicted max force deviation (eV/Å) to an expected max force error (eV/Å).

    ``method == "scale"``: ``error = scale * deviation``.
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

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise CalibrationError(
                f"unknown calibration method {self.method!r}; expected one of {CALIBRATION_METHODS}"
            )
        if self.method == "scale":
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
        if self.method == "scale":
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
        if self.method == "scale":
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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ``ValueError``."""
        if "method" not in data:
            raise CalibrationError("calibration dict is missing the key 'method'")
        unknown = set(data) - {"method", "scale", "x", "y", "n_points", "spearman"}
        if unknown:
            raise CalibrationError(f"unknown calibration keys: {sorted(unknown)}")
        return cls(
            method=str(data["method"]),
            scale=None if data.get("scale") is None else float(data["scale"]),
            x=tuple(float(v) for v in data.get("x", ())),
            y=tuple(float(v) for v in data.get("y", ())),
            n_points=int(data.get("n_points", 0)),
            spearman=None if data.get("spearman") is None else float(data["spearman"]),
        )


def fit_calibration(
    deviations: ArrayLike,
    errors: ArrayLike,
    method: str = "scale",
    *,
    min_points: int = 3,
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
            ``"isotonic"`` — the least-squares non-decreasing fit of error on deviation
            (pool-adjacent-violators, ties in deviation pooled first), interpolated
            linearly between knots and flat outside them.
        min_points: fewer labelled frames than this raise ``ValueError``.

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
    fitted = _pav(ymean, counts.astype(np.float64))
    # Drop knots interior to flat runs: same map, smaller dict.
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


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation of ``x`` and ``y`` (ties get average ranks).

    Returns NaN when either input is constant (the correlation is undefined there).
    Raises ``ValueError`` for mismatched lengths, fewer than 2 points or NaN values.
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.size != b.size:
        raise ValueError(f"spearman: x and y must have the same length, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"spearman: need at least 2 points, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("spearman: x and y must be finite (no NaN/inf)")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    ra = rankdata(a)
    rb = rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])
