"""The durable outcome of a labelling call: ``<workdir>/outcome.json``, written once, re-read on
every later call.

A DFT calculation is computed exactly once, whatever crashes, retries or races:
:meth:`dft_adapters.base.Labeler.label` holds an exclusive ``flock`` on ``<workdir>/.lock`` for
the whole call, returns a finished outcome found in the work directory without running anything,
and otherwise computes and writes the final outcome (success or final failure) atomically before
returning. The caller stores it in the database afterwards; a crash in between costs a re-read,
never a second DFT run.

File format (JSON, UTF-8), ``version`` 1::

    {"format": "pesflow.label-outcome", "version": 1,
     "written_at": "2025-01-31T12:00:00.123456+00:00",      # UTC, ISO 8601
     "structure": {"fingerprint": "<sha256 hex>", "formula": "Cu4", "natoms": 4},
     "checksum": "<sha256 hex of the canonical JSON of every other key>",
     "status": "ok" | "<failure kind>",
     ... every key of LabelResult.to_dict() / LabelFailure.to_dict() except reused/persisted:
     labeler, settings_hash, energy (eV), forces (eV/Å, n x 3), stress (eV/Å^3, Voigt, or
     null), code_version, settings, effective_settings_hash, kind, message, wall_time (s), host,
     workdir, attempts [{index, status, settings_changes, message, wall_time, workdir}]}

Floats are written with ``repr`` (Python's ``json``), which round-trips float64 exactly, so a
re-read label is bit-identical to the computed one. Paths inside the work directory are stored
relative to it (POSIX separators) and resolved against the directory the file is read from, so a
moved data directory still finds its attempt directories.

The lock is ``fcntl.flock`` (Linux/macOS; local filesystems and NFSv4, Lustre only when mounted
with ``-o flock``). It serialises threads and processes alike: each call opens its own file
description.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .results import LabelFailure, LabelOutcome, LabelResult, outcome_from_dict

__all__ = [
    "FORMAT",
    "LOCK_NAME",
    "OUTCOME_NAME",
    "VERSION",
    "OutcomeCorruptError",
    "OutcomeMismatchError",
    "discard_outcome",
    "input_fingerprint",
    "locked_workdir",
    "read_outcome",
    "write_outcome",
]

log = logging.getLogger(__name__)

FORMAT = "pesflow.label-outcome"
VERSION = 1
OUTCOME_NAME = "outcome.json"
LOCK_NAME = ".lock"
_LOCAL_KEYS = ("reused", "persisted")  # properties of one return value, not of the calculation


class OutcomeMismatchError(ValueError):
    """The work directory holds the outcome of another calculation (another labeler, settings
    or structure). Nothing was computed; use another work directory."""


class OutcomeCorruptError(ValueError):
    """``outcome.json`` exists but cannot be used: truncated, not JSON, another format or
    version, a failed checksum or malformed values."""


def input_fingerprint(atoms: Atoms) -> str:
    """sha256 (hex) of everything in ``atoms`` that a labeler's numbers depend on: atomic
    numbers (int64), positions (Å) and cell (Å) as exact float64 bytes, pbc, initial magnetic
    moments and initial charges (zeros when unset, so "unset" and "all zero" agree).

    Exact on purpose: this is an integrity check ("is the stored result the result of *this*
    input?"), not a similarity test. A stored force belongs to one set of positions; rounding
    (as :func:`dft_adapters.mock.structure_fingerprint` does for fault decisions) would accept
    a structure moved by less than the rounding step, and still split structures that straddle a
    rounding boundary, so it buys no robustness. The database stores positions as binary
    float64, so a structure read back from it gives the same bytes. Only ``-0.0`` is normalised
    to ``0.0`` (same number, different bytes). Tags, constraints and ``info`` do not enter: they
    do not change energy, forces or stress.
    """
    h = hashlib.sha256(b"pesflow-input-v1")
    for label, array, dtype in (
        ("numbers", atoms.numbers, "<i8"),
        ("positions", atoms.positions, "<f8"),
        ("cell", atoms.cell.array, "<f8"),
        ("pbc", atoms.pbc, "<i1"),
        ("magmoms", atoms.get_initial_magnetic_moments(), "<f8"),
        ("charges", atoms.get_initial_charges(), "<f8"),
    ):
        data = np.ascontiguousarray(array, dtype=dtype)
        if dtype == "<f8":
            data = data + 0.0  # -0.0 -> 0.0
        h.update(f"{label}{data.shape}".encode())
        h.update(data.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- locking
@contextmanager
def locked_workdir(workdir: str | Path) -> Iterator[Path]:
    """Create ``workdir`` if needed and hold an exclusive ``flock`` on ``workdir/.lock`` (block
    until it is free); yields the resolved directory. The lock file is never removed.

    Raises ``OSError`` when the directory or the lock file cannot be created or opened (a lock
    file that exists on a read-only filesystem is opened read-only, which ``flock`` accepts).
    """
    directory = Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    directory = directory.resolve()
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


# ----------------------------------------------------------------------------- reading
def read_outcome(workdir: str | Path) -> LabelOutcome | None:
    """The outcome stored in ``workdir/outcome.json``, or ``None`` when there is none.

    Needs no lock (the file is replaced atomically, never rewritten in place). Relative paths are
    resolved against ``workdir``; the value has ``reused=True`` and ``persisted=True``.
    Raises :class:`OutcomeCorruptError` when the file exists but cannot be used, ``OSError`` when
    it cannot be read.
    """
    outcome, _ = _read(Path(workdir).resolve())
    return outcome


def _read(directory: Path) -> tuple[LabelOutcome | None, dict[str, Any]]:
    path = directory / OUTCOME_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, {}
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise OutcomeCorruptError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise OutcomeCorruptError(f"{path}: not a {FORMAT} file")
    if record.get("version") != VERSION:
        raise OutcomeCorruptError(
            f"{path}: unsupported version {record.get('version')!r} (this code reads {VERSION})"
        )
    if record.get("checksum") != _checksum(record):
        raise OutcomeCorruptError(f"{path}: checksum mismatch (the file was altered or damaged)")
    try:
        outcome = _from_record(record, directory)
    except ValueError as err:
        raise OutcomeCorruptError(f"{path}: {err}") from err
    return dataclasses.replace(outcome, reused=True, persisted=True), record["structure"]


def _from_record(record: dict[str, Any], directory: Path) -> LabelOutcome:
    """The outcome in a parsed record, relative paths resolved against ``directory``."""
    structure = record.get("structure")
    if not isinstance(structure, dict) or not isinstance(structure.get("fingerprint"), str):
        raise ValueError("no structure fingerprint")
    body = {k: v for k, v in record.items() if k not in _LOCAL_KEYS}
    body["workdir"] = _resolve(body.get("workdir"), directory)
    attempts = body.get("attempts")
    if isinstance(attempts, list):
        body["attempts"] = [
            {**a, "workdir": _resolve(a.get("workdir"), directory)} if isinstance(a, dict) else a
            for a in attempts
        ]
    outcome = outcome_from_dict(body)
    if isinstance(outcome, LabelResult) and len(outcome.forces) != structure.get("natoms"):
        raise ValueError(
            f"forces for {len(outcome.forces)} atoms, structure has {structure.get('natoms')}"
        )
    return outcome


def load_matching(
    directory: Path, *, labeler: str, settings_hash: str, atoms: Atoms, fingerprint: str
) -> LabelOutcome | None:
    """The stored outcome of exactly this calculation, or ``None`` (nothing stored, or a corrupt
    file, which is moved aside to ``outcome.json.corrupt-<n>`` with a warning). Call it holding
    the lock. Raises :class:`OutcomeMismatchError` when the stored outcome is another one's.
    """
    for stale in directory.glob(f".{OUTCOME_NAME}.*.tmp"):  # left by a writer that was killed
        with suppress(OSError):
            stale.unlink()
    try:
        outcome, structure = _read(directory)
    except OutcomeCorruptError as err:
        _set_aside(directory, "corrupt", f"unusable outcome ({err}); computing anew")
        return None
    if outcome is None:
        return None
    differs = []
    if outcome.labeler != labeler:
        differs.append(f"labeler {outcome.labeler!r} (requested {labeler!r})")
    if outcome.settings_hash != settings_hash:
        differs.append(f"settings_hash {outcome.settings_hash} (requested {settings_hash})")
    if structure["fingerprint"] != fingerprint:
        differs.append(
            f"structure {structure.get('formula')} fingerprint {structure['fingerprint']} "
            f"(requested {atoms.get_chemical_formula()} fingerprint {fingerprint})"
        )
    if differs:
        raise OutcomeMismatchError(
            f"work directory {directory} holds the outcome of another calculation: stored "
            + "; ".join(differs)
            + ". Nothing was computed: label this structure in its own work directory."
        )
    return outcome


def discard_outcome(workdir: str | Path) -> Path | None:
    """Move ``workdir/outcome.json`` aside to ``outcome.json.discarded-<n>`` (under the lock), so
    the next :meth:`~dft_adapters.base.Labeler.label` computes anew, e.g. to retry a stored
    failure on purpose. Attempt directories are kept. Returns the new path, or ``None`` when
    there was no outcome. Raises ``OSError`` when the directory cannot be locked or renamed.
    """
    if not (Path(workdir) / OUTCOME_NAME).exists():
        return None
    with locked_workdir(workdir) as directory:
        if not (directory / OUTCOME_NAME).exists():  # discarded meanwhile
            return None
        return _set_aside(directory, "discarded", "discarded on request", strict=True)


def _set_aside(directory: Path, reason: str, why: str, strict: bool = False) -> Path | None:
    path = directory / OUTCOME_NAME
    n = 1
    while (target := directory / f"{OUTCOME_NAME}.{reason}-{n}").exists():
        n += 1
    try:
        os.rename(path, target)
    except OSError as err:
        if strict:
            raise
        log.warning("%s: %s; could not move it aside: %s", path, why, err)
        return None
    log.warning("%s: %s; moved to %s", path, why, target.name)
    return target


# ----------------------------------------------------------------------------- writing
def write_outcome(
    workdir: str | Path, outcome: LabelOutcome, atoms: Atoms, fingerprint: str | None = None
) -> LabelOutcome:
    """Write ``outcome`` (the label of ``atoms``) to ``workdir/outcome.json`` atomically: a
    temporary file in the same directory, flushed and fsynced, ``os.replace``, then an fsync of
    the directory. Call it holding the lock (see :func:`locked_workdir`).

    Returns the outcome exactly as a later :func:`read_outcome` will give it (JSON types, paths
    resolved against ``workdir``) with ``persisted=True``; the first return and every re-read
    are therefore identical but for ``reused``. Never raises: when serialising or writing fails
    it logs a warning naming the path and the error and returns ``outcome`` with
    ``persisted=False`` (the caller may still store it elsewhere).
    """
    directory = Path(workdir).resolve()
    path = directory / OUTCOME_NAME
    try:
        record = _record(outcome, atoms, directory, fingerprint or input_fingerprint(atoms))
        text = _dumps(record)
        stored = _from_record(json.loads(text), directory)
    except (TypeError, ValueError) as err:
        log.warning("cannot serialise the outcome for %s (%s); not persisted", path, err)
        return dataclasses.replace(outcome, persisted=False, reused=False)
    try:
        _atomic_write(path, text)
    except OSError as err:
        log.warning("cannot write %s (%s); outcome returned but not persisted", path, err)
        return dataclasses.replace(outcome, persisted=False, reused=False)
    return dataclasses.replace(stored, persisted=True, reused=False)


def _record(
    outcome: LabelOutcome, atoms: Atoms, directory: Path, fingerprint: str
) -> dict[str, Any]:
    body = {k: v for k, v in outcome.to_dict().items() if k not in _LOCAL_KEYS}
    body["workdir"] = _relative(outcome.workdir, directory)
    body["attempts"] = [
        {**a, "workdir": _relative(a["workdir"], directory)} for a in body["attempts"]
    ]
    if isinstance(outcome, LabelFailure):
        body["energy"] = body["forces"] = body["stress"] = None
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "written_at": datetime.now(UTC).isoformat(),
        "structure": {
            "fingerprint": fingerprint,
            "formula": atoms.get_chemical_formula(),
            "natoms": len(atoms),
        },
        **body,
    }
    record["checksum"] = _checksum(record)
    return record


def _dumps(record: dict[str, Any]) -> str:
    """JSON with one top-level key per line (values compact: an array of forces is one line)."""
    compact = {"allow_nan": False, "ensure_ascii": False, "separators": (",", ":")}
    lines = [f"{json.dumps(k)}: {json.dumps(v, **compact)}" for k, v in record.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _checksum(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems without directory fsync
            raise
    finally:
        os.close(dfd)


def _relative(path: str | None, directory: Path) -> str | None:
    """``path`` relative to ``directory`` (POSIX form) when inside it, else unchanged."""
    if path is None:
        return None
    try:
        return Path(path).relative_to(directory).as_posix()
    except ValueError:
        return path


def _resolve(path: Any, directory: Path) -> Any:
    if not isinstance(path, str) or Path(path).is_absolute():
        return path
    return str(directory / path)
