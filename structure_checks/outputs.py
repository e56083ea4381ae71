"""Completeness of DFT output files, read by both the labelers (:mod:`dft_adapters`) and the
store's label import (:mod:`database.extxyz`): one rule for "this run finished writing"."""

from __future__ import annotations

from pathlib import Path

__all__ = ["vasprun_complete"]


def vasprun_complete(path: Path) -> bool:
    """Whether a ``vasprun.xml`` ends with ``</modeling>`` (VASP closes it when it finishes; a
    file cut by a kill, a full disk or a run still going does not). Only the last 256 bytes are
    read.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 256))
        return fh.read().rstrip().endswith(b"</modeling>")
