"""Committee checkpoints: weights plus everything needed to trust and reproduce them.

The file is a ``torch.save`` of plain containers (dicts, lists, strings, numbers, tensors) so
``torch.load(weights_only=True)`` reads it: no pickled code runs when a checkpoint is loaded.
Contents: format tag and version, the model hyper-parameters (species, cutoff, seeds, ...),
the state dict (float64 reference energies included), free-form metadata (training-set label
ids, validation metrics, a deviation->error calibration) and library versions. A committee
with a physics baseline (:class:`mlip_core.repulsion.WithRepulsion`) is saved as its learned
part's backend payload plus a ``repulsion`` entry (the baseline's ``to_dict``), as format
version 2 (a pesflow that predates the baseline refuses it instead of silently dropping the
repulsion), and loaded wrapped again; a version-1 file (no entry) loads as the bare model.

Loading verifies: give :func:`load_committee` the sha256 recorded when the file was saved and the
bytes are hashed before anything is unpickled; a mismatch, a truncated file or anything else
that is not an intact checkpoint raises :class:`CheckpointIntegrityError` (a ``ValueError``),
so a corrupt checkpoint is never used silently.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import ase
import numpy as np
import torch

from mlip_core.calculator import CommitteeCalculator

__all__ = [
    "FORMAT",
    "CheckpointIntegrityError",
    "file_sha256",
    "load_calculator",
    "load_committee",
    "save_committee",
]

FORMAT = "pesflow-committee"
VERSION = 2
"""Format version written with a ``repulsion`` entry; a bare model is written as version 1."""
_SUPPORTED = (1, 2)
_SHOWN = 12  # hex digits of a sha256 shown in messages


class CheckpointIntegrityError(ValueError):
    """A checkpoint file is corrupt: its sha256 differs from the expected one, or it is
    truncated, unreadable or not a well-formed pesflow committee checkpoint.

    Attributes:
        path: the file.
        expected_sha256: the sha256 it should have had (None when none was given).
        found_sha256: the sha256 of the bytes read (None if they could not be read).
    """

    def __init__(
        self,
        message: str,
        path: Path,
        expected_sha256: str | None = None,
        found_sha256: str | None = None,
    ):
        super().__init__(message)
        self.path = path
        self.expected_sha256 = expected_sha256
        self.found_sha256 = found_sha256


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
    model: Any,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    backend: str = "native",
) -> str:
    """Write a checkpoint atomically (temp file, fsync, rename) and return its sha256. The
    bytes depend only on the weights, config and metadata (saving the same twice gives the
    same sha256).

    Args:
        model: the committee.
        path: destination file.
        metadata: plain data to keep with the weights (label ids, metrics, calibration ...).
        backend: the :mod:`mlip_core.backends` name whose ``to_payload`` describes the model
            (recorded in the file unless ``native``, whose files predate the key).
    """
    from mlip_core.backends import get_backend
    from mlip_core.repulsion import unwrap

    meta = dict(metadata or {})
    _check_plain(meta)
    learned, repulsion = unwrap(model)
    head: dict[str, Any] = {"format": FORMAT, "version": 1 if repulsion is None else VERSION}
    if backend != "native":
        head["backend"] = backend
    if repulsion is not None:
        head["repulsion"] = repulsion.to_dict()
    payload = {
        **head,
        **get_backend(backend).to_payload(learned),
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
    # serialised in memory first: the archive's inner name is then always "archive" (torch names
    # it after the file it writes to), so the same weights and metadata give the same bytes
    buf = io.BytesIO()
    torch.save(payload, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return hashlib.sha256(buf.getbuffer()).hexdigest()


def _normalise_sha(expected: str) -> str:
    sha = expected.strip().lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"expected_sha256 must be 64 hex digits, got {expected!r}")
    return sha


def load_committee(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    expected_sha256: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint with ``weights_only=True``; returns ``(model, metadata)``.

    The model is rebuilt by the backend the file records (``native`` when it records none);
    ``metadata["backend"]`` says which. A file with a ``repulsion`` entry gives the learned
    model plus that baseline (:class:`mlip_core.repulsion.WithRepulsion`), one without it the
    bare model; ``metadata["repulsion"]`` is the entry or None.

    The file is read once; its sha256 is computed from those bytes before anything is
    unpickled and, when ``expected_sha256`` is given, compared with it. The returned metadata
    also holds ``versions`` (libraries at save time) and ``sha256`` (of the bytes loaded).

    Args:
        path: the checkpoint file.
        map_location: device of the returned model.
        expected_sha256: the hex sha256 recorded when the file was saved (the value
            :func:`save_committee` returned); None skips the comparison (a truncated or
            unreadable file is still refused).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointIntegrityError: the sha256 differs from ``expected_sha256`` (the message names
            the path and both hashes' first digits), or the file is truncated, unreadable or
            not a well-formed pesflow committee checkpoint.
        ValueError: ``expected_sha256`` is not 64 hex digits, the checkpoint has a format
            version this pesflow does not support, or its backend is not installed.
    """
    path = Path(path)
    want = None if expected_sha256 is None else _normalise_sha(expected_sha256)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if want is not None and found != want:
        raise CheckpointIntegrityError(
            f"checkpoint {path} is corrupt or was replaced: expected sha256 {want[:_SHOWN]}...,"
            f" found {found[:_SHOWN]}... ({len(data)} bytes)",
            path,
            want,
            found,
        )

    def corrupt(problem: str) -> CheckpointIntegrityError:
        return CheckpointIntegrityError(
            f"{path} is not a readable pesflow checkpoint ({problem}; sha256 {found[:_SHOWN]}...,"
            f" {len(data)} bytes)",
            path,
            want,
            found,
        )

    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise corrupt(f"truncated or unreadable: {str(exc) or type(exc).__name__}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise corrupt("not a pesflow committee checkpoint")
    if payload.get("version") not in _SUPPORTED:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} not supported")
    from mlip_core.backends import get_backend

    backend = str(payload.get("backend", "native"))
    impl = get_backend(backend)  # PluginError (a ValueError): a backend not installed here
    try:
        model = impl.from_payload(payload)
        if payload.get("repulsion") is not None:
            from mlip_core.repulsion import WithRepulsion, ZBLRepulsion

            rep = ZBLRepulsion.from_dict(payload["repulsion"], cutoff=model.cutoff)
            model = WithRepulsion(model, rep.for_species(model.species))
        meta = dict(payload.get("metadata", {}))
        meta["versions"] = dict(payload.get("versions", {}))
    except Exception as exc:
        raise corrupt(f"malformed contents: {exc}") from exc
    model.eval()
    meta["repulsion"] = payload.get("repulsion")
    meta["sha256"] = found
    meta["backend"] = backend
    return model.to(map_location), meta


def load_calculator(
    path: str | Path, *, expected_sha256: str | None = None, **kwargs: Any
) -> CommitteeCalculator:
    """An ASE calculator (committee mean + uncertainties) from a checkpoint file.

    ``expected_sha256`` is checked as by :func:`load_committee` (same errors); other keyword
    arguments go to :class:`~mlip_core.calculator.CommitteeCalculator`.
    """
    model, _ = load_committee(path, expected_sha256=expected_sha256)
    return CommitteeCalculator(model, **kwargs)
