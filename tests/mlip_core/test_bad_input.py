"""Bad structures get a clear ValueError naming the problem, from the calculator and the graph."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlip_core.calculator import CommitteeCalculator
from mlip_core.neighbors import build_graph
from mlip_core.validation import StructureError, check_structure


def energy(model, atoms):
    atoms = atoms.copy()
    atoms.calc = CommitteeCalculator(model)
    return atoms.get_potential_energy()


def test_unknown_element_is_named(model64):
    with pytest.raises(
        ValueError, match=r"element\(s\) Fe not among the model's species \(H, O, Cu\)"
    ):
        energy(model64, bulk("Fe", "bcc", a=2.87))
    with pytest.raises(ValueError, match="Fe"):
        build_graph(bulk("Fe", "bcc", a=2.87), 5.0, model64.species_index)


def test_nan_positions_are_named(model64):
    at = bulk("Cu", "fcc", a=3.6, cubic=True)
    at.positions[2, 1] = np.nan
    with pytest.raises(StructureError, match=r"NaN or infinite for atom\(s\) \[2\]"):
        energy(model64, at)


def test_atoms_too_close_are_named(model64):
    at = Atoms("CuO", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(StructureError, match=r"atoms 0 and 1 are 0.100 Å apart"):
        energy(model64, at)


def test_too_close_through_periodic_image(model64):
    at = Atoms("CuO", positions=[[0.05, 0, 0], [7.9, 0, 0]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(StructureError, match=r"0\.150 Å apart"):
        check_structure(at, model64.species, min_distance=0.5)


def test_empty_structure(model64):
    with pytest.raises(StructureError, match="empty structure"):
        energy(model64, Atoms(cell=[5, 5, 5], pbc=True))


def test_degenerate_cell(model64):
    at = Atoms("Cu", positions=[[0, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(StructureError, match="degenerate cell"):
        check_structure(at, model64.species)


def test_valid_structure_passes(model64):
    check_structure(bulk("Cu", "fcc", a=3.6, cubic=True), model64.species)
    assert np.isfinite(energy(model64, bulk("Cu", "fcc", a=3.6, cubic=True)))
