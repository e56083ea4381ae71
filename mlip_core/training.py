"""Training a committee by force matching.

Loss of member k over its (bootstrap-weighted) training structures b:

    L_k = sum_b w_kb [ w_E ((E_kb - E_b)/N_b)^2 + w_F mean_i |F_kbi - F_bi|^2
                       + w_S |(sigma_kb - sigma_b) V_b / N_b|^2 / 9 ] / sum_b w_kb

- force VECTORS are compared, never magnitudes;
- energies enter per atom, on top of per-element reference energies fitted by least squares
  (absolute energies are arbitrary between codes), and should be weighted enough that E(V)
  is learned (forces carry no information on it);
- the stress term is the virial per atom (eV/atom), comparable with the energy term.

All K members train in one stacked network: one backward updates all of them, and with Adam
(per-parameter statistics) this equals K independent trainings. Diversity comes from the
independent initialisation seeds (a "deep ensemble"); per-member bootstrap weights w_kb (counts
of a bootstrap resample) are optional: each member then sees ~63 % of the distinct structures
(why they are off by default: docs/decisions/0001-committee-diversity.md).

Determinism: everything that shapes the weights (split, initialisation, bootstrap draws,
shuffling, learning-rate schedule) follows the seed and the epoch count, never the clock. The
same data, config and seed at the same torch intra-op thread count (set it with
:func:`mlip_core.threads.configure_threads`) give bit-identical weights; ``max_time_s`` can only
end training early, at an epoch boundary, and the result says so (``time_capped``,
``stop_reason``).

Training data are ASE ``Atoms`` carrying reference labels under the extended-XYZ keys
``info["REF_energy"]``, ``arrays["REF_forces"]`` and optionally ``info["REF_stress"]`` (Voigt,
eV/Å^3), the same keys pesflow exports (see :mod:`mlip_core.labelled`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from mlip_core.labelled import (
    REF_ENERGY,
    REF_FORCES,
    REF_STRESS,
    LabelledData,
    attach_labels,
    evaluate_errors,
    fit_reference_energies,
    read_labels,
    weighted_losses,
)
from mlip_core.model import CommitteePotential, ModelConfig
from mlip_core.neighbors import build_graph
from mlip_core.training_config import TrainingConfig, TrainingResult, cosine_learning_rate

__all__ = [
    "REF_ENERGY",
    "REF_FORCES",
    "REF_STRESS",
    "TrainingConfig",
    "TrainingResult",
    "attach_labels",
    "evaluate_errors",
    "fit_reference_energies",
    "train_committee",
]

log = logging.getLogger(__name__)


def _new_model(
    structures: Sequence[Atoms],
    model_config: ModelConfig | None,
    n_members: int,
    dtype: torch.dtype,
    present: set[int],
) -> CommitteePotential:
    """A new committee for ``structures`` (the training split) whose species are those of
    ``model_config`` that have labelled atoms in ``present`` (training and validation)."""
    species = sorted(present)
    cfg = (
        copy.deepcopy(model_config)
        if model_config
        else ModelConfig(species=species, n_members=n_members)
    )
    missing = sorted(set(species) - set(cfg.species))
    if missing:
        raise ValueError(
            "training data contain element(s) "
            + ", ".join(chemical_symbols[z] for z in missing)
            + " not in the model's species"
        )
    dropped = [z for z in cfg.species if z not in present]
    if dropped:
        # a species without one labelled atom has no reference energy and no learnt
        # interactions: the committee would predict it with a made-up energy and zero spread
        names = ", ".join(chemical_symbols[z] for z in dropped)
        log.warning(
            "no labelled atoms of %s: left out of the committee (the calculator refuses "
            "structures with %s until labels of it exist)",
            names,
            "it" if len(dropped) == 1 else "them",
        )
        cfg.species = [z for z in cfg.species if z in present]
    forces = np.concatenate([read_labels(at, i)[1].reshape(-1) for i, at in enumerate(structures)])
    cfg.energy_scale = float(np.sqrt(np.mean(forces**2))) or 1.0
    probe = CommitteePotential(ModelConfig(species=cfg.species, cutoff=cfg.cutoff, n_members=1))
    counts = [
        build_graph(at, cfg.cutoff, probe.species_index).mask.sum(1).double().mean().item()
        for at in structures[: min(len(structures), 20)]
    ]
    cfg.avg_neighbors = float(np.mean(counts)) if counts else 1.0
    model = CommitteePotential(cfg).to(dtype)
    sample = structures[:: max(1, len(structures) // 50)]
    model.fit_feature_statistics(
        [build_graph(at, cfg.cutoff, model.species_index, dtype=dtype) for at in sample]
    )
    ref = fit_reference_energies(structures, cfg.species)
    model.reference_energies.copy_(torch.as_tensor(ref, dtype=torch.float64))
    return model


def train_committee(
    structures: Sequence[Atoms],
    config: TrainingConfig | None = None,
    *,
    model: CommitteePotential | None = None,
    model_config: ModelConfig | None = None,
    n_members: int = 4,
    validation: Sequence[Atoms] | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Train a committee on labelled structures (from scratch, or fine-tune ``model``).

    Deterministic: the same inputs, config and seed at the same torch thread count give
    bit-identical weights, unless ``config.max_time_s`` binds (then ``time_capped`` is True).
    Seeds torch's global generator with ``config.seed``.

    Args:
        structures: labelled structures (REF_energy / REF_forces [/ REF_stress]).
        config: training hyper-parameters.
        model: warm start: continue from this committee (its weights are copied, not mutated).
        model_config: architecture for a new committee (species are taken from the data if None).
        n_members: committee size for a new committee when ``model_config`` is None.
        validation: explicit validation structures (else ``val_fraction`` of ``structures``).
        callback: called with each epoch's history row (progress reporting).

    Returns:
        A :class:`TrainingResult` with the best-validation model and its metrics.

    Raises:
        ValueError: no structures, missing or non-finite labels, or elements unknown to the
            model.
    """
    cfg = config or TrainingConfig()
    if len(structures) == 0:
        raise ValueError("no training structures")
    for i, at in enumerate(structures):
        read_labels(at, i)
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    order = rng.permutation(len(structures))
    if validation is not None:
        train_idx, val_idx = order.tolist(), []
        val_structs = list(validation)
    else:
        n_val = round(cfg.val_fraction * len(structures))
        n_val = max(1, n_val) if cfg.val_fraction > 0 and len(structures) > 1 else 0
        val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
        val_structs = [structures[i] for i in val_idx]
    train_structs = [structures[i] for i in train_idx]

    if model is not None:
        net = copy.deepcopy(model).to(dtype)
        unknown = sorted({int(z) for at in structures for z in at.numbers} - set(net.species))
        if unknown:
            raise ValueError(
                "cannot fine-tune: training data contain element(s) "
                + ", ".join(chemical_symbols[z] for z in unknown)
                + " unknown to the previous committee"
            )
    else:
        present = {int(z) for at in structures for z in at.numbers}  # validation split too
        net = _new_model(train_structs, model_config, n_members, dtype, present)
    k = net.n_members
    net.train()

    train_data = LabelledData(train_structs, net, dtype)
    val_data = LabelledData(val_structs, net, dtype) if val_structs else None
    n_train = len(train_structs)
    if cfg.bootstrap and k > 1:
        weights = torch.as_tensor(
            np.stack(
                [
                    np.bincount(rng.integers(0, n_train, n_train), minlength=n_train)
                    for _ in range(k)
                ]
            ),
            dtype=dtype,
        )
    else:
        weights = torch.ones(k, n_train, dtype=dtype)

    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_learning_rate * 0.5
    )
    params = [p for p in net.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params] if cfg.ema_decay else None

    def swap_ema() -> None:
        if ema is not None:
            with torch.no_grad():
                for p, e in zip(params, ema, strict=True):
                    tmp = p.detach().clone()
                    p.copy_(e)
                    e.copy_(tmp)

    best_loss, best_state, best_epoch = math.inf, copy.deepcopy(net.state_dict()), 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    stop_reason = f"reached max_epochs={cfg.max_epochs}"
    time_capped = False
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        net.train()
        perm = rng.permutation(n_train)
        total = 0.0
        for start in range(0, n_train, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size].tolist()
            batch = train_data.batch(idx, weights[:, idx])
            if float(batch.weights.sum()) == 0.0:
                continue
            if cfg.schedule == "cosine":
                lr = cosine_learning_rate(cfg, (epoch - 1 + start / n_train) / cfg.max_epochs)
                for group in opt.param_groups:
                    group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = weighted_losses(net, batch, cfg, create_graph=True)
            loss.sum().backward()
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - cfg.ema_decay)  # type: ignore[operator]
            total += float(loss.sum().detach()) * len(idx)
        row = {
            "epoch": float(epoch),
            "train_loss": total / n_train / k,
            "lr": opt.param_groups[0]["lr"],
        }
        val_loss = row["train_loss"]
        swap_ema()  # validate (and keep as best) the averaged weights
        if val_data is not None:
            net.eval()
            vl = 0.0
            for start in range(0, len(val_structs), 8):
                idx = list(range(start, min(start + 8, len(val_structs))))
                b = val_data.batch(idx, torch.ones(k, len(idx), dtype=dtype))
                loss = weighted_losses(net, b, cfg, create_graph=False)
                vl += float(loss.detach().sum()) * len(idx)
            val_loss = vl / len(val_structs) / k
            row["val_loss"] = val_loss
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if callback is not None:
            callback(row)
        if val_loss < best_loss * (1 - 1e-4):
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(net.state_dict())
        swap_ema()
        if cfg.schedule == "plateau":
            sched.step(val_loss)
        if epoch - best_epoch >= cfg.patience:
            stop_reason = f"early stop: no validation improvement for {cfg.patience} epochs"
            break
        if cfg.schedule == "plateau" and opt.param_groups[0]["lr"] < cfg.min_learning_rate:
            stop_reason = f"learning rate fell below {cfg.min_learning_rate}"
            break
        if cfg.stop_after_epochs is not None and epoch >= cfg.stop_after_epochs < cfg.max_epochs:
            time_capped = True  # the replay of a run the clock stopped here
            stop_reason = f"stopped after {epoch} of {cfg.max_epochs} epochs as recorded"
            break
        # the clock only ever ends training, at this epoch boundary; it shapes nothing else
        if (
            cfg.max_time_s is not None
            and epoch < cfg.max_epochs
            and time.perf_counter() - t0 >= cfg.max_time_s
        ):
            time_capped = True
            stop_reason = (
                f"time budget of {cfg.max_time_s:g} s used after {epoch} of {cfg.max_epochs} epochs"
            )
            break
    net.load_state_dict(best_state)
    net.eval()
    metrics = evaluate_errors(net, val_structs) if val_structs else {}
    metrics["best_epoch"] = float(best_epoch)
    wall = time.perf_counter() - t0
    log.info("trained %d-member committee: %s (%.1f s, %s)", k, metrics, wall, stop_reason)
    if time_capped:
        log.warning("training of a %d-member committee cut short: %s", k, stop_reason)
    return TrainingResult(
        model=net,
        metrics=metrics,
        history=history,
        train_indices=[int(i) for i in train_idx],
        val_indices=[int(i) for i in val_idx],
        epochs=epoch,
        wall_time_s=wall,
        stop_reason=stop_reason,
        time_capped=time_capped,
    )
