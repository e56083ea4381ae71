"""Training settings and results of the native committee (:mod:`mlip_core.training`); the
settings are also what every model backend receives (:class:`mlip_core.backends.TrainRequest`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlip_core.model import CommitteePotential

__all__ = ["TrainingConfig", "TrainingResult", "cosine_learning_rate"]


@dataclass
class TrainingConfig:
    """Training hyper-parameters.

    Attributes:
        max_epochs: epochs to train (fewer if early stopping or ``max_time_s`` ends it); the
            cosine schedule anneals over exactly this many epochs.
        max_time_s: wall-clock cap in seconds (None: none). Checked after each epoch (training,
            validation and callback done): once the elapsed time reaches it, training stops at
            that epoch boundary, never inside an epoch, so a run may exceed it by up to one
            epoch. It never changes the learning rate or anything else that shapes the
            weights: a cap that does not bind gives the same weights as None; a binding cap
            ends the run before the schedule has annealed (``TrainingResult.time_capped``).
        batch_size: structures per optimiser step.
        learning_rate: initial Adam learning rate.
        schedule: "cosine" (anneal to ``min_learning_rate`` over ``max_epochs``, per optimiser
            step) or "plateau" (drop by ``lr_factor`` on stagnation).
        lr_factor: factor of the plateau learning-rate schedule.
        lr_patience: plateau schedule: epochs without validation improvement before a drop.
        min_learning_rate: final learning rate (cosine) / stop threshold (plateau).
        ema_decay: decay of the exponential moving average of the weights used for validation
            and returned (None disables it).
        patience: early stopping: epochs without validation improvement.
        energy_weight: weight of the per-atom energy term, (eV/atom)^-2 relative to forces.
        force_weight: weight of the force term, (eV/Å)^-2.
        stress_weight: weight of the per-atom virial term (0 disables it).
        val_fraction: fraction of structures held out for validation (at least 1 if >0).
        bootstrap: per-member bootstrap weights (default False: every member sees every
            structure; diversity from the initialisation seeds).
        seed: seeds the split, initialisation, bootstrap draws, shuffling.
        dtype: "float32" or "float64".
        weight_decay: Adam weight decay.
        stop_after_epochs: stop after this many epochs while the schedule still spans
            ``max_epochs`` (replays a run that a time cap stopped there, bit for bit).

    Raises:
        ValueError: on construction, for an out-of-range or unknown value.
    """

    max_epochs: int = 300
    max_time_s: float | None = None
    stop_after_epochs: int | None = None
    batch_size: int = 2
    learning_rate: float = 5e-3
    schedule: str = "cosine"
    lr_factor: float = 0.5
    lr_patience: int = 8
    min_learning_rate: float = 1e-5
    ema_decay: float | None = 0.99
    patience: int = 25
    energy_weight: float = 100.0
    force_weight: float = 1.0
    stress_weight: float = 0.0
    val_fraction: float = 0.1
    bootstrap: bool = False
    seed: int = 0
    dtype: str = "float32"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "plateau"):
            raise ValueError(f"schedule must be 'cosine' or 'plateau', got {self.schedule!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("energy_weight", "force_weight", "stress_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.max_epochs < 1:
            raise ValueError("batch_size and max_epochs must be >= 1")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"max_time_s must be > 0 or None, got {self.max_time_s}")
        if self.stop_after_epochs is not None and not self.stop_after_epochs >= 1:
            raise ValueError(f"stop_after_epochs must be >= 1, got {self.stop_after_epochs}")


@dataclass
class TrainingResult:
    """Outcome of :func:`train_committee`.

    Attributes:
        model: the trained committee (best validation state), in eval mode.
        metrics: validation errors of the committee mean and of each member
            (force RMSE/MAE in eV/Å, energy RMSE/MAE in eV/atom) and ``best_epoch``.
        history: one dict per epoch (train loss, validation loss, learning rate, seconds).
        train_indices: indices of the input structures used for training.
        val_indices: indices held out for validation.
        epochs: epochs run (complete epochs; ``max_epochs`` unless stopped early).
        wall_time_s: training wall time, s.
        stop_reason: why training ended, e.g. "reached max_epochs=120", "early stop: ...",
            "time budget of 60 s used after 21 of 120 epochs".
        time_capped: True when ``max_time_s`` ended training before ``max_epochs`` (the
            schedule had not finished; the weights then depend on the machine's speed).
    """

    model: CommitteePotential
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_indices: list[int] = field(default_factory=list)
    val_indices: list[int] = field(default_factory=list)
    epochs: int = 0
    wall_time_s: float = 0.0
    stop_reason: str = ""
    time_capped: bool = False


def cosine_learning_rate(cfg: TrainingConfig, progress: float) -> float:
    """Cosine-annealed learning rate at ``progress`` = epochs done / ``max_epochs`` (0..1)."""
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_learning_rate + 0.5 * (cfg.learning_rate - cfg.min_learning_rate) * (
        1.0 + math.cos(math.pi * progress)
    )
