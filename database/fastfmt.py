"""Vectorised ``'%16.8f'`` formatting for extended-XYZ atom lines.

ASE writes each per-atom line with ``fmt % tuple(row)``: about 0.3 µs per number in Python, the
largest cost of exporting 10k frames. Here the digits come from integer arithmetic on
``rint(|x| * 1e8)`` in numpy. The result is identical to Python's correctly rounded ``%16.8f``:
the only values where ``rint`` of the float64 product can differ from correct decimal rounding
are those whose product lies within one ulp of a rounding midpoint; they are detected and
formatted by Python. Values with ``|x| >= 999999`` or non-finite values make the functions
return ``None`` (the caller then formats with Python).
"""

from __future__ import annotations

import numpy as np

_LIMIT = 999_999.0
_SPACE = ord(" ")


def _table(strings: list[str]) -> np.ndarray:
    return np.frombuffer("".join(strings).encode("ascii"), dtype=np.uint8).reshape(len(strings), -1)


# Lookup tables, one machine word per entry so that a lookup is a 1-D gather: 4-digit
# zero-padded groups (uint32), and the integer field with the dot, "     12." / "    -12."
# (uint64), for integer parts below 10^4 (larger ones, rare, are formatted by Python).
_DIGITS4 = _table([f"{i:04d}" for i in range(10_000)]).view(np.uint32).ravel()
_WHOLE = np.stack(
    [
        _table([f"{i:>7d}." for i in range(10_000)]).view(np.uint64).ravel(),
        _table([f"{'-' + str(i):>7}." for i in range(10_000)]).view(np.uint64).ravel(),
    ]
)


def format_f16_8(values: np.ndarray) -> np.ndarray | None:
    """ASCII codes (n, 16) of ``'%16.8f' % v`` for the flattened float64 ``values``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros((0, 16), dtype=np.uint8)
    if not np.all(np.isfinite(x)) or np.max(np.abs(x)) >= _LIMIT:
        return None
    scaled = np.abs(x) * 1e8
    q = np.rint(scaled)
    # rint of the rounded product can differ from correct decimal rounding only within an ulp
    # of a midpoint; whole parts >= 10^4 are outside the tables: both go to Python below.
    python = (np.abs(scaled - np.floor(scaled) - 0.5) <= 2 * np.spacing(scaled)) | (q >= 1e12)
    q = q.astype(np.int64)
    q[python] = 0
    whole = q // 100_000_000
    fraction = q - whole * 100_000_000
    high = fraction // 10_000
    words = np.empty((x.size, 2), dtype=np.uint64)
    words[:, 0] = _WHOLE[np.signbit(x).astype(np.intp), whole]
    halves = words.view(np.uint32)
    halves[:, 2] = _DIGITS4[high]
    halves[:, 3] = _DIGITS4[fraction - high * 10_000]
    out = words.view(np.uint8)
    for i in np.flatnonzero(python):
        out[i] = np.frombuffer(("%16.8f" % x[i]).encode(), dtype=np.uint8)  # noqa: UP031
    return out


def atom_lines(symbols: np.ndarray, positions: np.ndarray, forces: np.ndarray) -> str | None:
    """``'%-2s %16.8f %16.8f %16.8f %16.8f %16.8f %16.8f\\n'`` for every atom, or ``None``."""
    out = atom_lines_many([symbols], [positions], [forces])
    return None if out is None else out[0]


def atom_lines_many(
    symbols: list[np.ndarray], positions: list[np.ndarray], forces: list[np.ndarray]
) -> list[str] | None:
    """:func:`atom_lines` for many frames at once (one numpy pass: the per-call overhead is
    paid once per batch, not per frame); ``None`` if any value needs Python formatting."""
    counts = [len(s) for s in symbols]
    all_symbols = np.concatenate(symbols) if symbols else np.zeros(0, dtype="<U2")
    if any(len(s) > 2 for s in set(all_symbols.tolist())):
        return None
    n = len(all_symbols)
    numbers = format_f16_8(np.hstack([np.concatenate(positions), np.concatenate(forces)]))
    if numbers is None:
        return None
    numbers = numbers.reshape(n, 6, 16)
    width = 2 + 6 * 17 + 1
    line = np.full((n, width), _SPACE, dtype=np.uint8)
    line[:, :2] = np.char.ljust(all_symbols, 2).astype("S2").view(np.uint8).reshape(n, 2)
    for k in range(6):
        line[:, 3 + 17 * k : 19 + 17 * k] = numbers[:, k]
    line[:, -1] = ord("\n")
    text = line.tobytes().decode("ascii")
    bounds = np.concatenate([[0], np.cumsum(counts)]) * width
    return [text[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
