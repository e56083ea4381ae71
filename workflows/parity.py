"""Validation predictions of a trained committee, kept for parity plots.

At train time the committee mean's predictions on the validation set are written next to the
checkpoint (``iter-003.parity.npz``, float64 arrays, no pickles) and the model row records its
path (``validation["parity_uri"]``, relative to the data directory). :func:`read_parity` gives
them per regime: predicted vs reference force components (eV/Å) and energies per atom (eV/atom).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["parity_path", "read_parity", "write_parity"]


def parity_path(checkpoint: Path) -> Path:
    """Where the parity data of ``checkpoint`` go."""
    return checkpoint.with_suffix(".parity.npz")


def write_parity(path: Path, pred: Any, regimes: list[str]) -> None:
    """Write ``pred`` (:class:`mlip_core.labelled.FramePredictions`) and each structure's
    regime to ``path`` (compressed npz).

    Raises:
        ValueError: ``regimes`` does not give one name per structure.
    """
    if len(regimes) != len(pred):
        raise ValueError(f"got {len(regimes)} regime names for {len(pred)} structures")
    names = list(dict.fromkeys(regimes))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            regime_names=np.asarray(names, dtype=np.str_),
            regime=np.asarray([names.index(r) for r in regimes], dtype=np.int64),
            n_atoms=np.asarray(pred.n_atoms, dtype=np.int64),
            energy_pred=pred.energy_pred,
            energy_ref=pred.energy_ref,
            forces_pred=np.concatenate(pred.forces_pred).reshape(-1, 3),
            forces_ref=np.concatenate(pred.forces_ref).reshape(-1, 3),
        )


def read_parity(path: Path) -> dict[str, dict[str, Any]]:
    """``{regime: {"n_frames", "energy_pred", "energy_ref" (eV/atom, one per frame),
    "force_pred", "force_ref" (eV/Å, every Cartesian component of every atom)}}``.

    Raises:
        FileNotFoundError: no parity data at ``path``.
        ValueError: the file is not parity data.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, EOFError) as exc:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no parity data at {Path(path).name}") from None
        raise ValueError(f"{Path(path).name}: not parity data ({exc})") from None
    try:
        atom_regime = np.repeat(data["regime"], data["n_atoms"])
        out: dict[str, dict[str, Any]] = {}
        for k, name in enumerate(data["regime_names"].tolist()):
            frames, atoms = data["regime"] == k, atom_regime == k
            out[str(name)] = {
                "n_frames": int(frames.sum()),
                "energy_pred": data["energy_pred"][frames].tolist(),
                "energy_ref": data["energy_ref"][frames].tolist(),
                "force_pred": data["forces_pred"][atoms].reshape(-1).tolist(),
                "force_ref": data["forces_ref"][atoms].reshape(-1).tolist(),
            }
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{Path(path).name}: not parity data ({exc})") from None
    return out
