"""PySCF backend: units (Hartree, Bohr -> eV, Å) against textbook numbers, one SCF per label,
open shells, and a small periodic cell (``slow``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.units import Hartree

from dft_adapters import LabelResult, get_labeler

from .conftest import energy_of, fd_forces, si2


def h2(distance: float = 0.74) -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, distance]])


def test_h2_hartree_fock_energy_in_ev() -> None:
    """RHF/STO-3G H2 at 1.4 bohr: E = -1.1167 Ha (Szabo & Ostlund, table 3.6)."""
    result = get_labeler("pyscf", xc=None, basis="sto-3g").label(h2(1.4 * 0.529177210903))
    assert isinstance(result, LabelResult), result
    assert result.energy == pytest.approx(-1.1167 * Hartree, abs=2e-4 * Hartree)


def test_hartree_fock_forces_match_finite_differences_tightly() -> None:
    """No DFT grid in HF: analytic gradients and FD of the energy agree to ~3e-5 eV/Å
    (central-difference truncation at h = 1e-3 Å), ten times tighter than PBE on a grid."""
    labeler = get_labeler("pyscf", xc=None, basis="6-31g", conv_tol=1e-11)
    water = Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.77, -0.45], [0.05, -0.75, -0.47]])
    result = labeler.label(water)
    numeric = fd_forces(energy_of(labeler), water, [(0, 2), (1, 1), (2, 0)], 1e-3)
    analytic = result.forces[[0, 1, 2], [2, 1, 0]]
    assert np.abs(analytic).max() > 0.1
    np.testing.assert_allclose(analytic, numeric, atol=5e-5)


def test_h2_force_is_attractive_when_stretched_and_repulsive_when_compressed() -> None:
    labeler = get_labeler("pyscf", xc="pbe", basis="6-31g")
    stretched, compressed = labeler.label(h2(0.9)), labeler.label(h2(0.6))
    assert stretched.forces[1, 2] < 0 < stretched.forces[0, 2]  # pulled together
    assert compressed.forces[1, 2] > 0 > compressed.forces[0, 2]
    assert np.allclose(stretched.forces.sum(axis=0), 0, atol=1e-4)


def test_open_shell_and_log_file(tmp_path: Path) -> None:
    oh = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    result = get_labeler("pyscf", basis="6-31g", spin=1).label(oh, workdir=tmp_path)
    assert isinstance(result, LabelResult), result
    log = Path(result.workdir) / "pyscf.log"
    assert "converged SCF energy" in log.read_text()
    assert result.settings["method"] == "KS/pbe"


def test_retry_recovers_an_unconverged_scf() -> None:
    from ase.build import molecule

    labeler = get_labeler("pyscf", basis="6-31g", max_scf_steps=3)
    result = labeler.label(molecule("H2O"))
    assert isinstance(result, LabelResult), result
    assert result.attempts[0].status == "scf_unconverged" and result.attempts[-1].ok
    assert result.attempts[1].settings_changes == {"max_scf_steps": 6, "mixing": 0.5}


def test_partially_periodic_cells_are_rejected() -> None:
    atoms = si2()
    atoms.pbc = [True, True, False]
    outcome = get_labeler("pyscf", basis="gth-szv").label(atoms)
    assert outcome.kind.value == "invalid_input" and "pbc" in outcome.message


@pytest.mark.slow
def test_periodic_si2_gives_forces_and_stress() -> None:
    """Measured: ~50 s per label on 2 cores (the analytic stress dominates)."""
    labeler = get_labeler("pyscf", basis="gth-szv", xc="lda,vwn", kpts=(1, 1, 1))
    result = labeler.label(si2())
    assert isinstance(result, LabelResult), result
    assert result.stress is not None and result.stress.shape == (6,)
    assert np.allclose(result.forces.sum(axis=0), 0, atol=1e-4)
    assert abs(result.forces).max() > 0.5
