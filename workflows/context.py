"""A campaign opened in a process: its handle, store, parsed config and where its files live.

Every task (on the flow's process or on a Dask worker) reopens the campaign from a small
:class:`CampaignHandle`; :func:`open_context` caches one :class:`Context` per handle and process.
Files belong to the data directory and are recorded relative to it, so a moved or copied data
directory resumes with its own files:

- ``labels/<label id>/round-<r>/``: a label's DFT attempts and its ``outcome.json`` (the durable
  hand-off between the DFT code and the database, see :mod:`dft_adapters.outcome`);
- ``campaigns/<name>/models/``: committee checkpoints.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import CampaignConfig, parse_config
from .config_model import stored_snapshot
from .labeler import make_labeler

__all__ = [
    "RUNTIME_KEY",
    "CampaignFailedError",
    "CampaignHandle",
    "Context",
    "close_stores",
    "open_context",
    "open_store",
    "seed_of",
    "seeded_rng",
    "store_url",
    "strip_runtime",
]

RUNTIME_KEY = "_runtime"


class CampaignFailedError(RuntimeError):
    """The campaign stopped on an error it recorded (e.g. too many labelling failures)."""


@dataclass(frozen=True)
class CampaignHandle:
    """What a task needs to find its campaign: small, hashable, picklable."""

    db_url: str
    campaign_id: int
    name: str
    data_dir: str


# --------------------------------------------------------------------------- stores
_stores: dict[str, Any] = {}
_contexts: dict[CampaignHandle, Context] = {}
_lock = threading.Lock()
_secret_urls: dict[str, str] = {}


def _full_url(url: str) -> str:
    """The real URL behind a password-masked one (known in this process, or the
    ``PESFLOW_DATABASE_URL`` of the environment, e.g. on a Dask worker)."""
    if "***" not in url:
        return url
    if url in _secret_urls:
        return _secret_urls[url]
    from sqlalchemy.engine import make_url

    env = os.environ.get("PESFLOW_DATABASE_URL")
    if env and make_url(env).render_as_string(hide_password=True) == url:
        return env
    raise RuntimeError(f"database password for {url} unknown here: set PESFLOW_DATABASE_URL")


def open_store(url: str):
    """One :class:`database.Store` per URL and process (thread-safe, migrated once).
    A password-masked URL (as carried by a :class:`CampaignHandle`) is resolved first."""
    from database import Store

    url = _full_url(url)
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = Store.from_url(url)
        return store


def close_stores() -> None:
    """Dispose every cached store and context (tests, CLI exit)."""
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
        _contexts.clear()


def store_url(store) -> str:
    """The URL a task uses to reopen ``store``, password masked: handles are Prefect flow
    parameters, which the Prefect server stores and shows (see :func:`open_store`)."""
    full = store.engine.url.render_as_string(hide_password=False)
    masked = store.engine.url.render_as_string(hide_password=True)
    if masked != full:
        _secret_urls[masked] = full
    return masked


# --------------------------------------------------------------------------- context
@dataclass
class Context:
    """A campaign opened in this process: store, config snapshot, labeler, initial structures."""

    handle: CampaignHandle
    store: Any
    cfg: CampaignConfig
    runtime: dict[str, Any]
    _labeler: Any = field(default=None, repr=False)
    _initial: list | None = field(default=None, repr=False)

    @property
    def campaign_id(self) -> int:
        """The campaign's database id."""
        return self.handle.campaign_id

    @property
    def labeler_name(self) -> str:
        """Registry name of the labeler."""
        return self.cfg.labeler.name

    @property
    def settings_hash(self) -> str:
        """Hash of the labeler's settings (labels are unique per structure and this hash)."""
        return self.runtime["settings_hash"]

    @property
    def data_dir(self) -> Path:
        """The data directory this process sees (absolute)."""
        return Path(self.handle.data_dir)

    @property
    def models_dir(self) -> Path:
        """``<data_dir>/campaigns/<name>/models``."""
        return self.data_dir / "campaigns" / self.handle.name / "models"

    def label_dir(self, label_id: int, retry_round: int = 0) -> Path:
        """``<data_dir>/labels/<label id>/round-<r>``: the label's attempts and outcome."""
        return self.data_dir / "labels" / str(int(label_id)) / f"round-{int(retry_round)}"

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the data directory when inside it (else absolute)."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.data_dir.resolve()).as_posix()
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> Path:
        """A path recorded in the database, resolved against this data directory."""
        p = Path(stored)
        return p if p.is_absolute() else self.data_dir / p

    @property
    def labeler(self):
        """The labeler, built once per process."""
        if self._labeler is None:
            self._labeler = make_labeler(self.cfg)
        return self._labeler

    @property
    def initial(self) -> list:
        """The initial structures (from the database) as ``ase.Atoms``."""
        if self._initial is None:
            self._initial = self.store.get_atoms(self.runtime["initial_structure_ids"])
        return [a.copy() for a in self._initial]

    @property
    def initial_regimes(self) -> list[str]:
        """The regime name of each initial structure (recorded at set-up; a campaign set up
        before regimes existed has its sources' derived names when the counts match, else
        ``"initial"`` for every structure)."""
        ids = self.runtime["initial_structure_ids"]
        got = self.runtime.get("initial_regimes")
        if isinstance(got, list) and len(got) == len(ids):
            return [str(r) for r in got]
        names = [src.regime_name() for src in self.cfg.structures]
        return names if len(names) == len(ids) else ["initial"] * len(ids)

    @property
    def initial_sources(self) -> list[int]:
        """The index in ``cfg.structures`` of each initial structure's source (a campaign set
        up before sources were recorded: its structure index, as walkers' ``start`` read it)."""
        n = len(self.runtime["initial_structure_ids"])
        got = self.runtime.get("initial_sources")
        return [int(i) for i in got] if isinstance(got, list) and len(got) == n else list(range(n))

    @property
    def species(self) -> list[int]:
        """Atomic numbers of the campaign (from the initial structures)."""
        return sorted({int(z) for a in self.initial for z in a.numbers})

    @property
    def worker_id(self) -> str:
        """``host:pid``: who claims labels in this process."""
        return f"{socket.gethostname()}:{os.getpid()}"


def strip_runtime(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without the runtime facts pesflow adds (``_runtime``)."""
    return {k: v for k, v in config.items() if k != RUNTIME_KEY}


def _configure_threads() -> None:
    """pesflow's torch threads per worker process (a setting, default 1), never the
    environment's ``OMP_NUM_THREADS``: results depend on the thread count."""
    from mlip_core.threads import configure_threads

    from .settings import get_settings

    configure_threads(get_settings().threads_per_worker)


def open_context(handle: CampaignHandle) -> Context:
    """The campaign's :class:`Context` (cached per process; sets the process's torch threads
    the first time)."""
    with _lock:
        ctx = _contexts.get(handle)
    if ctx is not None:
        return ctx
    _configure_threads()
    store = open_store(handle.db_url)
    rec = store.get_campaign(handle.campaign_id)
    cfg = parse_config(
        stored_snapshot(strip_runtime(rec.config)),
        source=f"campaign {rec.name!r}",
        base_dir=handle.data_dir,
        check_files=False,
    )
    ctx = Context(handle, store, cfg, dict(rec.config.get(RUNTIME_KEY, {})))
    with _lock:
        _contexts[handle] = ctx
    return ctx


# --------------------------------------------------------------------------- set-up
def seeded_rng(*parts: Any) -> np.random.Generator:
    """A generator seeded from a hash of ``parts`` (same parts, same stream)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def seed_of(*parts: Any) -> int:
    """A 32-bit seed from a hash of ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")
