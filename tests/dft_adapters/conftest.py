"""Shared helpers for dft_adapters tests: structures, finite differences. The fake process
runner (the one seam we fake; parsers always run for real on committed output files) and the
other doubles are shipped in :mod:`dft_adapters.testing` (re-exported here for older imports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from dft_adapters.contract import energy_of, fd_forces, fd_stress
from dft_adapters.testing import FakeRunner, fake_executable

from .._codes import QE_PSEUDO_DIR, in_ci, require_cp2k, require_pw_x

FIXTURES = Path(__file__).parent / "fixtures"
# re-exported from dft_adapters.testing / dft_adapters.contract and tests/_codes.py
__all__ = [
    "QE_PSEUDO_DIR",
    "FakeRunner",
    "energy_of",
    "fake_executable",
    "fd_forces",
    "fd_stress",
    "in_ci",
    "require_cp2k",
    "require_pw_x",
]


def si2() -> Atoms:
    """Rattled two-atom diamond Si cell (forces and shear stress are non-zero)."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=0)
    return atoms


def cu4() -> Atoms:
    """Rattled, slightly strained conventional fcc Cu cell."""
    atoms = bulk("Cu", "fcc", a=3.60, cubic=True)
    atoms.set_cell(
        atoms.cell.array @ np.array([[1.0, 0.02, 0], [0, 0.99, 0.01], [0, 0, 1.01]]),
        scale_atoms=True,
    )
    atoms.rattle(0.05, seed=1)
    return atoms


def h2o() -> Atoms:
    """Slightly distorted water molecule (non-periodic)."""
    atoms = molecule("H2O")
    atoms.rattle(0.03, seed=2)
    return atoms


def c2_diamond_for_fixture() -> Atoms:
    """The structure of the committed VASP fixture (C2, a=3.57 Å, atom 2 displaced)."""
    cell = np.array([[0.0, 1.785, 1.785], [1.785, 0.0, 1.785], [1.785, 1.785, 0.0]])
    return Atoms("C2", cell=cell, scaled_positions=[[0, 0, 0], [0.26, 0.25, 0.24]], pbc=True)


def too_close(atoms: Atoms, distance: float = 0.1) -> Atoms:
    """A copy with atom 1 placed ``distance`` Å from atom 0."""
    bad = atoms.copy()
    bad.positions[1] = bad.positions[0] + np.array([distance, 0.0, 0.0])
    return bad


def future_layout(code: str) -> str:
    """A finished run's output in a layout no parser here knows (a release that renamed the
    block holding the forces), from the committed fixture of ``code``."""
    if code == "cp2k":
        text = (FIXTURES / "cp2k/Si2_converged.out").read_text()
        return text.replace("ATOMIC FORCES in [a.u.]", "ATOMIC FORCES [Eh/a0]")
    if code == "espresso":
        text = (FIXTURES / "espresso/Si2_converged.pwo").read_text(encoding="latin-1")
        return text.replace("Forces acting on atoms", "Atomic forces")
    if code == "vasp":
        text = (FIXTURES / "vasp/vasprun_C2_static.xml").read_text(encoding="latin-1")
        return text.replace('<varray name="forces" >', '<varray name="atomic_forces" >')
    raise ValueError(code)


@pytest.fixture
def qe_pseudo_dir(tmp_path: Path) -> str:
    """A pseudopotential directory with a dummy Si file (for fake-runner QE tests)."""
    directory = tmp_path / "pseudo"
    directory.mkdir()
    (directory / "Si.pbe-rrkj.UPF").write_text("dummy: the fake runner never reads it\n")
    return str(directory)


def cp2k_stub_data(directory: Path) -> str:
    """Minimal CP2K basis/potential files with Si entries (for fake-runner CP2K tests, so they
    need no CP2K installation)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "BASIS_MOLOPT").write_text(
        "# test stub\nSi SZV-MOLOPT-SR-GTH SZV-MOLOPT-SR-GTH-q4\n 1\n"
    )
    (directory / "GTH_POTENTIALS").write_text("# test stub\nSi GTH-PBE-q4 GTH-PBE\n 2 2\n")
    return str(directory)


@pytest.fixture
def cp2k_data_dir(tmp_path: Path) -> str:
    """A stub CP2K data directory (see :func:`cp2k_stub_data`)."""
    return cp2k_stub_data(tmp_path / "cp2k-data")


@pytest.fixture(autouse=True)
def _scratch_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels made without ``workdir`` put their scratch under the test's tmp_path, not /tmp."""
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
