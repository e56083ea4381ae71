"""Calibrated uncertainty of a campaign's committees: fitted when a committee is trained, checked
on the frames labelled after it.

After training, the committee's max-atom force deviation and its mean's max-atom force error on
every validation frame give a split-conformal bound per regime
(:func:`mlip_core.calibration.fit_regime_calibration`: ``error <= scale_r * deviation`` with
probability :data:`COVERAGE`; regimes with fewer than :data:`MIN_POINTS` validation frames use
the pooled bound). It is stored in the model row's metrics (``calibration``) and checkpoint.

When the next committee is trained, the previous one's bound is checked on the frames labelled
in between, which it never saw (:func:`coverage_on_new_labels`, ``calibration_coverage`` in
the metrics: per regime, the share of frames whose true max error was within the bound). Those
frames were picked *because* the committee was unsure of them, so this is a check where the
bound matters most, not an unbiased estimate of its coverage on all explored frames.

With ``trust.calibrated: true`` the trust window is a tolerance on that bound:
:func:`calibrated_trust` turns ``lo``/``hi`` (eV/Å of max force error) into the walker's window on
the raw deviation with the exploring committee's bound for the walker's regime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .progress import reporter
from .regimes import EXPLORED, REGIME_KEY

__all__ = [
    "COVERAGE",
    "MIN_POINTS",
    "bound_summary",
    "calibrated_trust",
    "coverage_on_new_labels",
    "fit_model_calibration",
]

COVERAGE = 0.9
"""Target coverage of the stored bound."""

MIN_POINTS = 10
"""Validation frames a regime needs for a bound of its own (a 0.9 bound needs at least 9)."""


def fit_model_calibration(pred: Any, regimes: Sequence[str], where: str) -> dict[str, Any] | None:
    """The per-regime conformal bound of a committee from its validation predictions
    (:class:`mlip_core.labelled.FramePredictions`), as a plain dict; ``None`` (reported) when
    the validation set is too small or the committee has one member."""
    from mlip_core.calibration import CalibrationError, fit_regime_calibration

    try:
        cal = fit_regime_calibration(
            pred.max_devi_f,
            pred.max_force_errors(),
            list(regimes),
            method="conformal",
            coverage=COVERAGE,
            min_points=MIN_POINTS,
        )
    except CalibrationError as exc:
        reporter().message(f"{where}: no uncertainty calibration ({exc})")
        return None
    return cal.to_dict()


def coverage_on_new_labels(
    previous: Any,
    calibration: dict[str, Any] | None,
    train: Sequence[Any],
    new_ids: set[int],
    ids: Sequence[int],
) -> dict[str, Any] | None:
    """How often the previous committee's stored bound held on the training frames labelled
    after it was trained (``ids`` of ``train``; ``new_ids`` those it was not trained on):
    ``{regime: {"n", "covered", "target"}, "all": ...}``; ``None`` without a previous
    committee, a stored calibration or new frames."""
    from mlip_core.calibration import RegimeCalibration, coverage_report
    from mlip_core.labelled import predict_frames

    new = [a for a, i in zip(train, ids, strict=True) if i in new_ids]
    if previous is None or calibration is None or not new:
        return None
    pred = predict_frames(previous, new)
    regimes = [str(a.info.get(REGIME_KEY, EXPLORED)) for a in new]
    report = coverage_report(
        RegimeCalibration.from_dict(calibration), pred.max_devi_f, pred.max_force_errors(), regimes
    )
    return {k: {**v, "n": int(v["n"] or 0)} for k, v in report.items()}


def calibrated_trust(
    trust: Any, calibration: dict[str, Any] | None, regime: str
) -> tuple[Any, str]:
    """The :class:`mlip_core.monitor.Trust` of a walker whose window ``trust.lo`` / ``trust.hi``
    are tolerances on the calibrated max force error (eV/Å): ``lo / scale_r`` and
    ``hi / scale_r`` on the raw deviation, with the bound of ``regime`` (or the pooled one) in
    the committee's ``calibration``; and a line saying which. Without a calibration (the first
    committee, a validation set too small) the window stays on the raw deviation, and the line
    says so."""
    import dataclasses

    from mlip_core.calibration import RegimeCalibration

    if calibration is None:
        return trust, "no calibrated bound yet: the trust window applies to the raw deviation"
    cal = RegimeCalibration.from_dict(calibration).for_regime(regime)
    lo, hi = cal.deviation_for(trust.lo), cal.deviation_for(trust.hi)
    which = "its own" if regime in calibration.get("by_regime", {}) else "the pooled"
    return dataclasses.replace(trust, lo=lo, hi=hi), (
        f"calibrated window for {regime} ({which} 90 % bound, {cal.scale:.2f} x deviation): "
        f"deviation [{lo:.3g}, {hi:.3g}) eV/Å for errors [{trust.lo:g}, {trust.hi:g}) eV/Å"
    )


def bound_summary(calibration: dict[str, Any] | None, lo: float, hi: float) -> str:
    """One line: the calibrated window every regime's walkers get (``lo``/``hi`` in eV/Å)."""
    if calibration is None:
        return "trust window on the raw deviation (no calibrated bound yet)"
    pooled = calibration["pooled"]["scale"]
    own = ", ".join(f"{k} {v['scale']:.2f}" for k, v in calibration.get("by_regime", {}).items())
    return (
        f"trust window [{lo:g}, {hi:g}) eV/Å on the 90 % error bound = {pooled:.2f} x deviation"
        + (f" (own bounds: {own})" if own else " (pooled over the regimes)")
    )
