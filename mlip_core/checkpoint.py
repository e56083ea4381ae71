"""Committee checkpoints: weights plus everything needed to trust and reproduce them.

The file is a ``torch.save`` of plain containers (dicts, lists, strings, numbers, tensors) so
``torch.load(weights_only=True)`` reads it: no pickled code runs when a checkpoint is loaded.
Contents: format tag and version, the model hyper-parameters (species, cutoff, seeds, ...),
the state dict (float64 reference energies included), free-form metadata (training-set label
ids, validation metrics, a deviation->error calibration) and library versions.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import ase
import numpy as np
import torch

from mlip_core.calculator import CommitteeCalculator
from mlip_core.model import CommitteePotential, ModelConfig

__all__ = ["FORMAT", "file_sha256", "load_calculator", "load_committee", "save_committee"]

FORMAT = "pesflow-committee"
VERSION = 1


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the checkpoint's content hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_plain(obj: Any, where: str = "metadata") -> None:
    """Refuse metadata that ``weights_only`` loading could not read back."""
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a checkpoint")


def save_committee(
    model: CommitteePotential, path: str | Path, metadata: dict[str, Any] | None = None
) -> str:
    """Write a checkpoint atomically (temp file + rename) and return its sha256.

    Args:
        model: the committee.
        path: destination file.
        metadata: plain data to keep with the weights (label ids, metrics, calibration ...).
    """
    meta = dict(metadata or {})
    _check_plain(meta)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": meta,
        "versions": {
            "torch": str(torch.__version__),
            "ase": str(ase.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(),
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return file_sha256(path)


def load_committee(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[CommitteePotential, dict[str, Any]]:
    """Load a checkpoint with ``weights_only=True``; returns ``(model, metadata)``.

    The returned metadata also holds ``versions`` (libraries at save time) and ``sha256``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable pesflow checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pesflow committee checkpoint")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} not supported")
    cfg = ModelConfig(**payload["config"])
    model = CommitteePotential(cfg).to(getattr(torch, payload["dtype"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = dict(payload.get("metadata", {}))
    meta["versions"] = payload.get("versions", {})
    meta["sha256"] = file_sha256(path)
    return model.to(map_location), meta


def load_calculator(path: str | Path, **kwargs: Any) -> CommitteeCalculator:
    """An ASE calculator (committee mean + uncertainties) from a checkpoint file."""
    model, _ = load_committee(path)
    return CommitteeCalculator(model, **kwargs)
