"""Compact binary codec for numpy arrays stored in the database.

Layout (little endian)::

    b"PFA1" | dtype code (1 byte) | ndim (1 byte) | shape (ndim x uint32) | raw data (C order)

dtype codes: ``d`` float64, ``q`` int64, ``i`` int32, ``b`` uint8/bool (stored as uint8,
decoded as bool for code ``?``). Floats are stored as raw IEEE-754 float64, so a round trip is
bit-exact (including -0.0, subnormals, inf and NaN payloads).
"""

from __future__ import annotations

import math
import struct

import numpy as np
from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator

MAGIC = b"PFA1"
_CODES: dict[str, np.dtype] = {
    "d": np.dtype("<f8"),
    "q": np.dtype("<i8"),
    "i": np.dtype("<i4"),
    "B": np.dtype("u1"),
    "?": np.dtype("?"),
}
_KIND_TO_CODE = {"f": "d", "i": "q", "u": "q", "b": "?"}


def encode_array(array: np.ndarray | list | tuple) -> bytes:
    """Encode an array as compact bytes (floats become float64, integers int64, bools bool)."""
    arr = np.asarray(array)
    code = _KIND_TO_CODE.get(arr.dtype.kind)
    if code is None:
        raise ValueError(f"cannot store an array of dtype {arr.dtype} (numbers or bools only)")
    if arr.dtype == np.int32:
        code = "i"
    if arr.ndim > 255:
        raise ValueError("array has too many dimensions")
    data = np.ascontiguousarray(arr, dtype=_CODES[code])
    header = MAGIC + code.encode() + struct.pack(f"<B{arr.ndim}I", arr.ndim, *arr.shape)
    return header + data.tobytes()


def decode_array(blob: bytes | memoryview) -> np.ndarray:
    """Decode bytes written by :func:`encode_array` into a new, writable numpy array."""
    if not isinstance(blob, bytes):
        blob = bytes(blob)
    if blob[:4] != MAGIC:
        raise ValueError("not an encoded array (bad magic)")
    code = chr(blob[4])
    ndim = blob[5]
    shape = struct.unpack_from(f"<{ndim}I", blob, 6)
    count = math.prod(shape)
    dtype = _CODES[code]
    arr = np.frombuffer(blob, dtype=dtype, offset=6 + 4 * ndim, count=count).reshape(shape)
    return arr.copy() if dtype.isnative else arr.astype(dtype.newbyteorder("="))


class NDArray(TypeDecorator):
    """SQLAlchemy column type: a numpy array stored as compact binary (BLOB / BYTEA)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        return encode_array(value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return decode_array(value)
