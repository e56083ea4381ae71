"""Reading a campaign's structure files and contents, under a :class:`StructurePolicy`.

Content (the text of an extxyz / xyz / CIF / POSCAR file) is parsed by
:mod:`workflows.structure_text` inside a fresh temporary directory, never in the data directory.
Who may name a file is the policy:

- ``local`` (a config on the operator's own machine, the CLI): a path relative to the config
  file, any format ASE reads, but never a file inside the data directory or the database file
  itself (reading it through ASE would corrupt it: closing any descriptor of a SQLite file
  drops the process's locks on it);
- ``api`` (a config sent by an API client): only regular files inside one of the operator's
  import directories (``PESFLOW_IMPORT_DIRS``, symlinks followed), not inside the data
  directory and not the database; anything else, a missing file included, gets the same
  message (:data:`NOT_IMPORTABLE`), so that answers tell nothing about the server's files. The
  file is read through one descriptor opened without following links, copied into a
  temporary directory and parsed there, in one of the formats of :data:`FORMATS`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .structure_text import (
    FORMATS,
    _check_frames,
    _frames,
    parse_text,
    read_cif,
    select_frames,
)

__all__ = [
    "NOT_IMPORTABLE",
    "StructurePolicy",
    "importable_path",
    "local_path",
    "read_content",
    "read_file",
]

_SUFFIX_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".cif": "cif", ".vasp": "vasp"}

NOT_IMPORTABLE = (
    "not an importable structure file (the API reads files only from the operator's "
    "import directories)"
)
"""The one answer for every file an API client may not read, missing files included."""


# --------------------------------------------------------------------------- policy
def _sqlite_files(url: str | None) -> tuple[Path, ...]:
    if not url or not url.startswith("sqlite"):
        return ()
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    if not db or db == ":memory:":
        return ()
    return tuple(Path(db + s) for s in ("", "-wal", "-shm", "-journal"))


@dataclass(frozen=True)
class StructurePolicy:
    """Which structure files a config may name and how much content it may carry.

    ``mode`` is ``"local"`` (CLI) or ``"api"``; ``base_dir`` anchors relative paths of local
    configs; ``data_dir`` and ``db_files`` are never read; ``import_dirs`` are the only
    directories an API config reads from; ``max_content_bytes`` caps each ``content`` and
    ``max_import_bytes`` each imported file (bytes).
    """

    mode: Literal["local", "api"] = "local"
    base_dir: Path = Path(".")
    data_dir: Path | None = None
    db_files: tuple[Path, ...] = ()
    import_dirs: tuple[Path, ...] = ()
    max_content_bytes: int = 2_000_000
    max_import_bytes: int = 200_000_000
    _db_ids: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = set()
        for path in self.db_files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            ids.add((st.st_dev, st.st_ino))
        object.__setattr__(self, "_db_ids", frozenset(ids))

    @classmethod
    def local(
        cls, base_dir: str | Path = ".", data_dir: str | Path | None = None, settings: Any = None
    ) -> StructurePolicy:
        """The CLI's policy: files relative to ``base_dir``, none inside ``data_dir`` (default:
        the settings' data directory) or the settings' SQLite database."""
        from .settings import get_settings

        settings = settings or get_settings()
        data = Path(data_dir) if data_dir is not None else Path(settings.data_dir)
        url = settings.database_url if data_dir is None else None
        return cls(
            mode="local",
            base_dir=Path(base_dir),
            data_dir=data.absolute(),
            db_files=_sqlite_files(url) + _sqlite_files(f"sqlite:///{data / 'pesflow.sqlite'}"),
            max_content_bytes=settings.max_structure_bytes,
            max_import_bytes=settings.max_import_bytes,
        )

    @classmethod
    def api(
        cls, data_dir: str | Path, database_url: str | None = None, settings: Any = None
    ) -> StructurePolicy:
        """The API's policy: files only from the settings' import directories, never in
        ``data_dir`` or the database ``database_url`` (a SQLite URL; default in ``data_dir``)."""
        from .settings import get_settings

        settings = settings or get_settings()
        data = Path(data_dir).absolute()
        return cls(
            mode="api",
            base_dir=data,
            data_dir=data,
            db_files=_sqlite_files(database_url)
            + _sqlite_files(f"sqlite:///{data / 'pesflow.sqlite'}"),
            import_dirs=tuple(Path(d) for d in settings.import_dirs),
            max_content_bytes=settings.max_structure_bytes,
            max_import_bytes=settings.max_import_bytes,
        )

    def is_database(self, real: str) -> bool:
        """True when ``real`` is (a link to) the database file or one of its companions."""
        try:
            st = os.stat(real)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self._db_ids

    def in_data_dir(self, real: str) -> bool:
        """True when the resolved path ``real`` lies inside the data directory."""
        return self.data_dir is not None and _inside(real, os.path.realpath(self.data_dir))


def _inside(real: str, directory: str) -> bool:
    return real == directory or real.startswith(directory.rstrip(os.sep) + os.sep)


def _format_of(name: str, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    base = Path(name).name
    if base.upper().startswith(("POSCAR", "CONTCAR")):
        return "vasp"
    found = _SUFFIX_FORMATS.get(Path(base).suffix.lower())
    if found is None:
        raise ValueError(
            f"cannot tell the format of {base!r}: give 'format' (one of {', '.join(FORMATS)})"
        )
    return found


def importable_path(file: str, policy: StructurePolicy) -> str:
    """The resolved path of an API structure file, or ``ValueError(NOT_IMPORTABLE)`` for every
    path outside the import directories, inside the data directory, missing, not a regular
    file or the database."""
    if "\x00" in file or not policy.import_dirs:
        raise ValueError(NOT_IMPORTABLE)
    dirs = [os.path.realpath(d) for d in policy.import_dirs]
    given = Path(file)
    for candidate in [given] if given.is_absolute() else [Path(d) / given for d in dirs]:
        real = os.path.realpath(candidate)
        if not any(_inside(real, d) and real != d for d in dirs) or policy.in_data_dir(real):
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and not policy.is_database(real):
            return real
    raise ValueError(NOT_IMPORTABLE)


def _read_import(real: str, fmt: str, index: str, policy: StructurePolicy) -> list:
    try:
        before = os.stat(real)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise ValueError(NOT_IMPORTABLE) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise ValueError(NOT_IMPORTABLE)
        data = fh.read(policy.max_import_bytes + 1)
    if len(data) > policy.max_import_bytes:
        raise ValueError(f"larger than the limit of {policy.max_import_bytes} bytes")
    return parse_text(data, fmt, index, name="the file")


def local_path(file: str, policy: StructurePolicy) -> Path:
    """A local config's structure file, resolved (relative to ``policy.base_dir``); raises
    ``ValueError`` when it is missing or inside the data directory / the database."""
    path = Path(file).expanduser()
    path = path if path.is_absolute() else policy.base_dir / path
    if not path.is_file():
        raise ValueError(f"structure file not found: {path}")
    real = os.path.realpath(path)
    if policy.in_data_dir(real) or policy.is_database(real):
        raise ValueError(
            f"structure file {path} is inside the data directory {policy.data_dir} or is the "
            "database (pesflow never reads its own files as structures); copy the structures "
            "elsewhere"
        )
    return Path(real)


def read_file(file: str, fmt: str | None, index: str, policy: StructurePolicy) -> list:
    """The frames of a structure file under ``policy`` (``ValueError``, one line, otherwise)."""
    if policy.mode == "api":
        real = importable_path(file, policy)  # first: the same answer for every refused path
        return _read_import(real, _format_of(file, fmt), index, policy)
    import ase.io

    path = local_path(file, policy)
    labels = None
    try:
        if FORMATS.get(fmt or "") == "cif" or (fmt is None and path.suffix.lower() == ".cif"):
            frames, labels = read_cif(path)
            picked = select_frames(list(range(len(frames))), index, f"structure file {path}")
            frames, labels = [frames[i] for i in picked], [labels[i] for i in picked]
        else:
            frames = _frames(ase.io.read(path, index=index, format=FORMATS.get(fmt or "")))
    except Exception as exc:
        raise ValueError(
            f"cannot read structure file {path}: {type(exc).__name__}: {exc}"
        ) from None
    if not frames:
        raise ValueError(f"structure file {path} holds no structures")
    _check_frames(frames, f"structure file {path}", labels)
    return frames


def read_content(content: str, fmt: str | None, index: str, policy: StructurePolicy) -> list:
    """The frames of inline ``content`` (size-limited by ``policy``)."""
    if fmt is None:
        raise ValueError(f"'format' is required with 'content' (one of {', '.join(FORMATS)})")
    size = len(content.encode())
    if size > policy.max_content_bytes:
        raise ValueError(f"{size} bytes, more than the limit of {policy.max_content_bytes} bytes")
    return parse_text(content, fmt, index)
