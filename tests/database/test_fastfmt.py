"""The vectorised '%16.8f' formatter is identical to Python's for every float64."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from database.fastfmt import atom_lines, format_f16_8


def _python(values) -> list[str]:
    return ["%16.8f" % v for v in values]  # noqa: UP031 (what ASE does)


def _ours(values) -> list[str]:
    out = format_f16_8(np.asarray(values, dtype=np.float64))
    return [row.tobytes().decode() for row in out]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-999_998.9, max_value=999_998.9, allow_subnormal=True),
        min_size=1,
        max_size=50,
    )
)
def test_matches_python_formatting(values):
    assert _ours(values) == _python(values)


def test_edge_cases():
    rng = np.random.default_rng(0)
    halves = (np.arange(-2000, 2000) + 0.5) * 1e-8  # decimal midpoints at the 8th digit
    near = np.concatenate([np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf)])
    special = [
        0.0,
        -0.0,
        1e-12,
        -1e-12,
        5e-9,
        -5e-9,
        4.9999999999e-9,
        1.0,
        -1.0,
        0.999999995,
        -0.999999995,
        999_998.99999999,
        -999_998.99999999,
        123456.5,
        1e-300,
        5e-324,
    ]
    wide = rng.normal(size=2000) * 10.0 ** rng.integers(-9, 6, size=2000)
    for values in (halves, near, special, wide):
        assert _ours(values) == _python(values)


def test_out_of_range_values_fall_back():
    assert format_f16_8(np.array([1e6])) is None
    assert format_f16_8(np.array([np.nan])) is None


def test_atom_lines_match_ase_format():
    rng = np.random.default_rng(1)
    pos, forces = rng.normal(size=(5, 3)) * 10, rng.normal(size=(5, 3))
    symbols = np.array(["Cu", "H", "Au", "O", "Cu"])
    fmt = "%-2s %16.8f %16.8f %16.8f %16.8f %16.8f %16.8f\n"
    expected = "".join(fmt % (s, *p, *f) for s, p, f in zip(symbols, pos, forces, strict=True))
    assert atom_lines(symbols, pos, forces) == expected
