"""Property checks the AL benchmark compares a committee with its oracle on
(:mod:`benchmarks.al_efficiency.properties`: equation of state, cubic elastic constants, vacancy formation)."""

from __future__ import annotations

import pytest
from ase.calculators.emt import EMT

from benchmarks.al_efficiency.properties import (
    LabelerCalculator,
    compare_properties,
    cubic_elastic_constants,
    equation_of_state,
    property_checks,
    vacancy_formation_energy,
)


@pytest.fixture(scope="module")
def emt_props() -> dict[str, float]:
    return property_checks(EMT(), "Cu", "fcc", 3.61)


def test_properties_of_emt_copper(emt_props: dict[str, float]) -> None:
    p = emt_props
    assert p["lattice_constant"] == pytest.approx(3.59, abs=0.01)  # EMT Cu
    assert 120 < p["bulk_modulus_GPa"] < 150
    b_elastic = (p["C11_GPa"] + 2 * p["C12_GPa"]) / 3  # cubic: B = (C11 + 2 C12) / 3
    assert b_elastic == pytest.approx(p["bulk_modulus_GPa"], rel=0.02)
    assert p["C11_GPa"] > p["C12_GPa"] > 0 and p["C44_GPa"] > 0  # Born stability
    assert 0.5 < p["vacancy_formation_relaxed_eV"] <= p["vacancy_formation_unrelaxed_eV"] < 2.0


def test_labeler_calculator_is_the_oracle() -> None:
    from dft_adapters import get_labeler

    calc = LabelerCalculator(get_labeler("emt"))
    a = equation_of_state(calc, n_points=5)
    b = equation_of_state(EMT(), n_points=5)
    assert a["lattice_constant"] == pytest.approx(b["lattice_constant"], rel=1e-6)
    c = cubic_elastic_constants(calc, a=b["lattice_constant"])
    d = cubic_elastic_constants(EMT(), a=b["lattice_constant"])
    assert c["C44_GPa"] == pytest.approx(d["C44_GPa"], rel=1e-6)
    v = vacancy_formation_energy(calc, a=3.59, repeat=2, relax=False)
    assert v["unrelaxed_eV"] > 0


def test_compare_properties_percentages() -> None:
    out = compare_properties(
        {"lattice_constant": 3.6, "energy_per_atom": 1.0},
        {"lattice_constant": 3.5, "energy_per_atom": -0.1},
    )
    assert set(out) == {"lattice_constant"}  # absolute energies are not comparable
    assert out["lattice_constant"]["diff_percent"] == pytest.approx(100 * 0.1 / 3.5)
