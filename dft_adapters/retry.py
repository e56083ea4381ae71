"""Retry policy as data: which failure kinds are retried, how often, and with what changes.

On ``scf_unconverged`` the next attempt gets more SCF steps and a smaller mixing fraction
(:data:`CONVERGENCE_KEYS`: these change only how the SCF gets there, not the converged answer)
and — only when opted into with ``physics_keys=("smearing",)`` — from the
``smearing_from_retry``-th retry on, more smearing (which does change the answer; the label then
keeps the settings that produced it, and a training set refuses to mix it with the others unless
told that the key does not matter); each only where the backend's settings have that knob; ``crashed`` is retried
once with unchanged settings; ``timeout`` is not retried by default; ``invalid_input``,
``missing_executable`` and ``unparsable_output`` are never retried (a rerun cannot fix them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .results import FailureKind
from .settings import Settings

__all__ = ["CONVERGENCE_KEYS", "NEVER_RETRIED", "PHYSICS_KEYS", "RetryPolicy"]

CONVERGENCE_KEYS = frozenset({"max_scf_steps", "mixing"})
"""Settings a retry changes that do not change the converged answer."""

PHYSICS_KEYS = frozenset({"smearing"})
"""Settings a retry may change, only when opted into per key, that change the answer."""

NEVER_RETRIED = frozenset(
    {FailureKind.INVALID_INPUT, FailureKind.MISSING_EXECUTABLE, FailureKind.UNPARSABLE_OUTPUT}
)


@dataclass(frozen=True)
class RetryPolicy:
    """How a labeler reacts to failures (plain data; ``to_dict`` for the database/config).

    Attributes
    ----------
    scf_retries:
        Extra attempts after ``scf_unconverged``.
    scf_steps_factor:
        Multiplies ``max_scf_steps`` per retry.
    mixing_factor:
        Multiplies ``mixing`` per retry (smaller mixing is more stable).
    smearing_increment:
        Added to ``smearing`` (eV) per retry from retry ``smearing_from_retry`` on, capped at
        ``max_smearing``, when ``"smearing"`` is in ``physics_keys``; skipped when the settings
        use no smearing (``smearing`` is ``None`` or 0).
    physics_keys:
        The :data:`PHYSICS_KEYS` a retry may change (default none: a retry never changes the
        physics).
    crashed_retries, timeout_retries:
        Extra attempts, with unchanged settings, after ``crashed`` / ``timeout``.
    """

    scf_retries: int = 2
    scf_steps_factor: float = 2.0
    mixing_factor: float = 0.5
    smearing_increment: float = 0.05
    max_smearing: float = 0.5
    smearing_from_retry: int = 2
    crashed_retries: int = 1
    timeout_retries: int = 0
    physics_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "physics_keys", tuple(sorted(set(self.physics_keys))))
        unknown = set(self.physics_keys) - PHYSICS_KEYS
        if unknown:
            raise ValueError(
                f"RetryPolicy.physics_keys: {sorted(unknown)} unknown; a retry may change only "
                f"{sorted(PHYSICS_KEYS)}"
            )
        for name in ("scf_retries", "crashed_retries", "timeout_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0")
        if self.scf_steps_factor < 1 or not 0 < self.mixing_factor <= 1:
            raise ValueError("RetryPolicy needs scf_steps_factor >= 1 and 0 < mixing_factor <= 1")

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(scf_retries=0, crashed_retries=0, timeout_retries=0)

    def max_retries(self, kind: FailureKind) -> int:
        """How many retries a failure of ``kind`` gets."""
        kind = FailureKind(kind)
        if kind in NEVER_RETRIED:
            return 0
        return {
            FailureKind.SCF_UNCONVERGED: self.scf_retries,
            FailureKind.CRASHED: self.crashed_retries,
            FailureKind.TIMEOUT: self.timeout_retries,
        }[kind]

    def next_settings(self, settings: Settings, kind: FailureKind, retry: int = 1) -> Settings:
        """Settings for retry number ``retry`` (1 = first) after a failure of ``kind``
        (unchanged unless SCF trouble)."""
        if FailureKind(kind) is not FailureKind.SCF_UNCONVERGED:
            return settings
        changes: dict[str, Any] = {}
        if settings.has("max_scf_steps") and settings.max_scf_steps is not None:  # type: ignore[attr-defined]
            steps = settings.max_scf_steps  # type: ignore[attr-defined]
            changes["max_scf_steps"] = max(steps + 1, math.ceil(steps * self.scf_steps_factor))
        if settings.has("mixing") and settings.mixing is not None:  # type: ignore[attr-defined]
            changes["mixing"] = round(settings.mixing * self.mixing_factor, 10)  # type: ignore[attr-defined]
        smear = (
            "smearing" in self.physics_keys
            and retry >= self.smearing_from_retry
            and self.smearing_increment > 0
        )
        if smear and settings.has("smearing") and settings.smearing:  # type: ignore[attr-defined]
            changes["smearing"] = round(
                min(self.max_smearing, settings.smearing + self.smearing_increment),  # type: ignore[attr-defined]
                10,
            )
        return settings.replace(**changes) if changes else settings

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the policy."""
        return asdict(self)
