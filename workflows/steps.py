"""The campaign's steps as plain functions (no Prefect), each idempotent against the database.

The database is the source of truth for where a campaign stands:

- an iteration with status ``done`` is never redone;
- ``seed`` (iteration 0 only): bootstrap + validation structures, selected and requested;
- ``train``: done when the iteration has a model row (a half-trained model is retrained);
- ``explore``: one ``walker:<i>`` entry per finished walker in the iteration's ``validation``
  dict (finished walkers are not rerun), aggregated counts when all are done;
- ``select``: the ``select`` entry of ``step_timings``; picks are deterministic (seeded);
- ``label``: every ``pending`` label of the campaign is claimed and computed; labels left
  ``running`` by a killed run are requeued when a run starts (:func:`prepare_resume`);
  ``done`` labels are never recomputed (labels are unique per structure + settings hash);
- ``decide``: sets the iteration ``done`` and, when it stops, the campaign status.

Concurrency is injected: :func:`run_campaign` takes a ``walker_map`` callable and a label
``submit`` callable returning ``concurrent.futures.Future`` objects (in-process by default;
:mod:`workflows.flows` passes Prefect task submission).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import timing
from .config import CampaignConfig, ConfigError, parse_config
from .progress import reporter

__all__ = [
    "CampaignConflictError",
    "CampaignFailedError",
    "CampaignHandle",
    "Context",
    "Decision",
    "WalkerPlan",
    "bootstrap_structures",
    "check_failure_rate",
    "close_stores",
    "decide",
    "explore_one",
    "explore_step",
    "initial_structures",
    "label_one",
    "label_step",
    "load_model",
    "make_labeler",
    "open_context",
    "open_store",
    "prepare_resume",
    "reopen_campaign",
    "run_campaign",
    "seed_step",
    "select_step",
    "setup_campaign",
    "summary_rows",
    "train_step",
    "walker_plans",
    "walker_spec",
]

RUNTIME_KEY = "_runtime"
WALKER_PREFIX = "walker:"


class CampaignFailedError(RuntimeError):
    """The campaign stopped on an error it recorded (e.g. too many labelling failures)."""


class CampaignConflictError(ConfigError):
    """A campaign of that name exists with a different configuration."""


@dataclass(frozen=True)
class CampaignHandle:
    """What a task needs to find its campaign: small, hashable, picklable."""

    db_url: str
    campaign_id: int
    name: str
    data_dir: str


# --------------------------------------------------------------------------- context
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
    import os

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
    def models_dir(self) -> Path:
        """``<data_dir>/campaigns/<name>/models``."""
        return Path(self.handle.data_dir) / "campaigns" / self.handle.name / "models"

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
    def species(self) -> list[int]:
        """Atomic numbers of the campaign (from the initial structures)."""
        return sorted({int(z) for a in self.initial for z in a.numbers})


def make_labeler(cfg: CampaignConfig):
    """Build the configured labeler (with injected faults and retry policy)."""
    from dft_adapters import RetryPolicy, get_labeler

    lc = cfg.labeler
    kwargs: dict[str, Any] = dict(lc.settings)
    if lc.faults is not None:
        from dft_adapters.mock import FaultInjection

        kinds = lc.faults.kinds or None
        kwargs["faults"] = (
            FaultInjection.spread(lc.faults.fraction, kinds, lc.faults.seed, lc.faults.delay)
            if kinds
            else FaultInjection.spread(
                lc.faults.fraction, seed=lc.faults.seed, delay=lc.faults.delay
            )
        )
    kwargs["retry_policy"] = RetryPolicy() if lc.retries else RetryPolicy.no_retries()
    return get_labeler(lc.name, **kwargs)


def config_snapshot(cfg: CampaignConfig) -> dict[str, Any]:
    """The config as stored in the campaign row (JSON)."""
    return cfg.model_dump(mode="json")


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != RUNTIME_KEY}


def open_context(handle: CampaignHandle) -> Context:
    """The campaign's :class:`Context` (cached per process)."""
    with _lock:
        ctx = _contexts.get(handle)
    if ctx is not None:
        return ctx
    store = open_store(handle.db_url)
    rec = store.get_campaign(handle.campaign_id)
    cfg = parse_config(
        _strip(rec.config),
        source=f"campaign {rec.name!r}",
        base_dir=handle.data_dir,
        check_files=False,
    )
    ctx = Context(handle, store, cfg, dict(rec.config.get(RUNTIME_KEY, {})))
    with _lock:
        _contexts[handle] = ctx
    return ctx


# --------------------------------------------------------------------------- structures
def initial_structures(cfg: CampaignConfig) -> list:
    """Read / build the configured initial structures (``ase.Atoms``, no calculator)."""
    import ase.io
    from ase.build import bulk, surface

    out = []
    for src in cfg.structures:
        if src.file is not None:
            frames = ase.io.read(src.file, index=src.index)
            frames = frames if isinstance(frames, list) else [frames]
            for a in frames:
                b = a.copy()
                b.calc = None
                out.append(b)
            continue
        g = src.generate
        assert g is not None
        kw: dict[str, Any] = {"cubic": g.cubic} if g.crystal != "hcp" else {}
        if g.lattice_constant is not None:
            kw["a"] = g.lattice_constant
        atoms = bulk(g.element, g.crystal, **kw)
        if g.surface is not None:
            atoms = surface(atoms, g.surface, g.layers, vacuum=g.vacuum)
            atoms.pbc = (True, True, False)
        out.append(atoms.repeat(g.repeat))
    return out


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _seed(*parts: Any) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def bootstrap_structures(
    initial: Sequence, n: int, rattles: Sequence[float], strain: float, rng: np.random.Generator
) -> list:
    """``n`` copies of the initial structures (round-robin), isotropically strained by up to
    ``strain`` and rattled by Gaussian displacements (stdev cycled over ``rattles``, Å)."""
    out = []
    for j in range(n):
        a = initial[j % len(initial)].copy()
        eps = rng.uniform(-strain, strain) if strain > 0 else 0.0
        if a.pbc.all():
            a.set_cell(a.cell.array * (1 + eps), scale_atoms=True)
        sigma = rattles[j % len(rattles)]
        a.positions = a.positions + rng.normal(0.0, sigma, a.positions.shape)
        out.append(a)
    return out


# --------------------------------------------------------------------------- setup/resume
def setup_campaign(store, cfg: CampaignConfig, data_dir: str | Path) -> CampaignHandle:
    """Create the campaign (or reopen it when the same config was run before).

    Raises :class:`CampaignConflictError` when a campaign of that name exists with another
    config. Idempotent: a run killed during set-up completes it.
    """
    snapshot = config_snapshot(cfg)
    from database import UnknownCampaignError

    try:
        rec = store.get_campaign(cfg.name)
    except UnknownCampaignError:
        rec = store.create_campaign(cfg.name, snapshot, exist_ok=True)
    if _strip(rec.config) != snapshot:
        raise CampaignConflictError(
            f"campaign {cfg.name!r} already exists with a different config; "
            f"use `pesflow resume {cfg.name}` or choose another name"
        )
    return _complete_setup(store, rec, cfg, data_dir)


def _complete_setup(store, rec, cfg: CampaignConfig, data_dir: str | Path) -> CampaignHandle:
    if RUNTIME_KEY not in rec.config:
        atoms = initial_structures(cfg)
        ids = store.add_structures(atoms, campaign=rec.id, source="initial")
        runtime = {"initial_structure_ids": ids, "settings_hash": make_labeler(cfg).settings_hash}
        rec = store.update_campaign_config(rec.id, {**rec.config, RUNTIME_KEY: runtime})
    return CampaignHandle(store_url(store), rec.id, rec.name, str(Path(data_dir).absolute()))


def store_url(store) -> str:
    """The URL a task uses to reopen ``store``, password masked: handles are Prefect flow
    parameters, which the Prefect server stores and shows (see :func:`open_store`)."""
    full = store.engine.url.render_as_string(hide_password=False)
    masked = store.engine.url.render_as_string(hide_password=True)
    if masked != full:
        _secret_urls[masked] = full
    return masked


def reopen_campaign(store, name: str, data_dir: str | Path) -> CampaignHandle:
    """Handle of an existing campaign (by name or id) for ``resume``."""
    rec = store.get_campaign(name)
    cfg = parse_config(
        _strip(rec.config), source=f"campaign {rec.name!r}", base_dir=data_dir, check_files=False
    )
    return _complete_setup(store, rec, cfg, data_dir)


def prepare_resume(ctx: Context, *, retry_failed: bool = False) -> dict[str, int]:
    """Before a (re)start: labels left ``running`` by a killed run go back to ``pending``;
    optionally failed labels are retried; selections without a label get one."""
    store = ctx.store
    requeued = store.requeue_running(ctx.campaign_id)
    retried = store.requeue_failed(ctx.campaign_id) if retry_failed else 0
    missing = _reconcile_labels(ctx)
    return {"requeued_running": requeued, "requeued_failed": retried, "requested": missing}


def _reconcile_labels(ctx: Context) -> int:
    """Request a label for every structure the campaign selected but has no label for."""
    store = ctx.store
    selected = {s.structure_id: s.iteration_id for s in store.list_selections(ctx.campaign_id)}
    labelled = {lb.structure_id for lb in _labels(ctx)}
    missing = [sid for sid in selected if sid not in labelled]
    for sid in missing:
        store.request_labels(
            ctx.campaign_id,
            [sid],
            labeler=ctx.labeler_name,
            settings_hash=ctx.settings_hash,
            settings=dict(ctx.cfg.labeler.settings),
            iteration_id=selected[sid],
        )
    return len(missing)


def _labels(ctx: Context, **kwargs: Any) -> list:
    return ctx.store.list_labels(ctx.campaign_id, limit=None, **kwargs)


# --------------------------------------------------------------------------- seed
def seed_step(ctx: Context, it) -> None:
    """Iteration 0: bootstrap and validation structures, selected and requested (idempotent:
    the structures are regenerated identically and deduplicated by hash)."""
    from database import SelectionInput

    if "seed" in it.step_timings:
        return
    t0 = time.perf_counter()
    cfg, store, cid = ctx.cfg, ctx.store, ctx.campaign_id
    initial = ctx.initial
    val = bootstrap_structures(
        initial,
        cfg.validation.n_structures,
        cfg.validation.rattle,
        cfg.validation.strain,
        _rng(cfg.seed, "validation"),
    )
    boot = bootstrap_structures(
        initial,
        cfg.bootstrap.n_structures,
        [cfg.bootstrap.rattle],
        cfg.bootstrap.strain,
        _rng(cfg.seed, "bootstrap"),
    )
    vids = store.add_structures(val, campaign=cid, iteration_id=it.id, source="validation")
    bids = store.add_structures(boot, campaign=cid, iteration_id=it.id, source="bootstrap")
    store.record_selections(
        cid, [SelectionInput(i, reason="validation") for i in vids], iteration_id=it.id
    )
    store.record_selections(
        cid, [SelectionInput(i, reason="bootstrap") for i in bids], iteration_id=it.id
    )
    store.request_labels(
        cid,
        vids + bids,
        labeler=ctx.labeler_name,
        settings_hash=ctx.settings_hash,
        settings=dict(cfg.labeler.settings),
        iteration_id=it.id,
    )
    store.record_step_time(it.id, "seed", time.perf_counter() - t0)


# --------------------------------------------------------------------------- label
def _db_failure_kind(kind: str) -> tuple[str, str]:
    from database.models import FAILURE_KINDS

    return (kind, "") if kind in FAILURE_KINDS else ("other", f"[{kind}] ")


def label_one(handle: CampaignHandle, label_id: int) -> str:
    """Compute one claimed (``running``) label and store the result or the typed failure.

    Returns the label's new status (``done`` / ``failed``). A label that is no longer
    ``running`` (already finished) is left alone and its status returned.
    """
    ctx = open_context(handle)
    store = ctx.store
    rec = store.get_label(label_id)
    if rec.status not in ("running", "pending"):
        return rec.status
    atoms = store.get_atoms([rec.structure_id])[0]
    with timing.compute("label"):
        outcome = ctx.labeler.label(atoms)
    if outcome.ok:
        store.store_result(
            label_id,
            energy=outcome.energy,
            forces=outcome.forces,
            stress=outcome.stress,
            wall_time=outcome.wall_time,
            host=outcome.host,
        )
        status = "done"
    else:
        kind, prefix = _db_failure_kind(str(outcome.kind))
        store.store_failure(
            label_id,
            kind=kind,
            message=prefix + outcome.message,
            wall_time=outcome.wall_time,
            host=outcome.host or None,
        )
        status = "failed"
    reporter().advance("label")
    return status


def _sequential(fn: Callable[..., Any]) -> Callable[[list], list]:
    return lambda items: [fn(*item) if isinstance(item, tuple) else fn(item) for item in items]


LabelSubmit = Callable[[int], "Future[str]"]


def _label_now(handle: CampaignHandle) -> LabelSubmit:
    """The in-process ``submit``: labels at once and returns the finished future."""

    def submit(label_id: int) -> Future[str]:
        fut: Future[str] = Future()
        try:
            fut.set_result(label_one(handle, label_id))
        except Exception as exc:  # handed to the caller
            fut.set_exception(exc)
        return fut

    return submit


def label_step(
    ctx: Context, it, submit: LabelSubmit | None = None, slots: int = 8
) -> dict[str, int]:
    """Claim and compute every pending label of the campaign, ``slots`` at a time.

    ``submit(label_id)`` starts one claimed label and returns a ``concurrent.futures.Future``
    of its status (default: computed in this process). A label is claimed and submitted as soon
    as a slot frees, so one slow calculation holds only its own slot, not a whole batch. If a
    label's future raises, no new labels are submitted; the ones in flight are awaited (their
    results are stored) and the first error is raised.
    """
    submit = submit or _label_now(ctx.handle)
    t0 = time.perf_counter()
    store = ctx.store
    pending = store.count_labels(ctx.campaign_id)["pending"]
    reporter().start("label", pending, f"iteration {it.index}: labelling")
    counts = {"done": 0, "failed": 0}
    in_flight: set[Future[str]] = set()
    error: BaseException | None = None
    exhausted = False
    while True:
        free = slots - len(in_flight)
        if error is None and not exhausted and free > 0:
            claimed = store.claim_labels(
                limit=free,
                labeler=ctx.labeler_name,
                settings_hash=ctx.settings_hash,
                campaign=ctx.campaign_id,
            )
            exhausted = len(claimed) < free
            for t in claimed:
                try:
                    in_flight.add(submit(t.label_id))
                except Exception as exc:  # raised after the in-flight ones
                    error = error or exc
        if not in_flight:
            break
        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        for fut in done:
            try:
                status = fut.result()
            except Exception as exc:  # raised after the in-flight ones
                error = error or exc
                continue
            counts[status] = counts.get(status, 0) + 1
    reporter().finish("label")
    store.record_step_time(it.id, "label", time.perf_counter() - t0)
    if error is not None:
        raise error
    return counts


def check_failure_rate(ctx: Context, it) -> None:
    """Raise :class:`CampaignFailedError` (and mark the campaign failed) when more than
    ``labeler.max_failure_rate`` of the iteration's finished labels failed."""
    labs = _labels(ctx, iteration_id=it.id)
    failed = [lb for lb in labs if lb.status == "failed"]
    finished = [lb for lb in labs if lb.status in ("done", "failed")]
    if not finished:
        return
    rate = len(failed) / len(finished)
    if rate > ctx.cfg.labeler.max_failure_rate:
        kinds: dict[str, int] = {}
        for lb in failed:
            kinds[lb.failure_kind] = kinds.get(lb.failure_kind, 0) + 1
        msg = (
            f"iteration {it.index}: {len(failed)}/{len(finished)} labels failed "
            f"({rate:.0%} > max_failure_rate {ctx.cfg.labeler.max_failure_rate:.0%}); "
            f"kinds: {', '.join(f'{k}={n}' for k, n in sorted(kinds.items()))}; "
            f"first: {failed[0].failure_message}"
        )
        ctx.store.update_iteration(it.id, status="failed")
        ctx.store.set_campaign_status(ctx.campaign_id, "failed", msg)
        raise CampaignFailedError(" ".join(msg.split()))


# --------------------------------------------------------------------------- train
def _training_data(ctx: Context) -> tuple[list, list, list[int]]:
    """(training atoms, validation atoms, training label ids) from the database."""
    from database.extxyz import labelled_atoms

    store = ctx.store
    val_sids = {
        s.structure_id for s in store.list_selections(ctx.campaign_id) if s.reason == "validation"
    }
    items = store.training_set(
        ctx.campaign_id, labeler=ctx.labeler_name, settings_hash=ctx.settings_hash
    )
    train, val, ids = [], [], []
    for item in items:
        atoms = labelled_atoms(item, campaign=ctx.handle.name)
        if item.structure.id in val_sids:
            val.append(atoms)
        else:
            train.append(atoms)
            ids.append(item.label.id)
    return train, val, ids


def _model_for(ctx: Context, iteration_id: int):
    models = [m for m in ctx.store.list_models(ctx.campaign_id) if m.iteration_id == iteration_id]
    return models[-1] if models else None


def _previous_model(ctx: Context, it):
    earlier = {i.id for i in ctx.store.list_iterations(ctx.campaign_id) if i.index < it.index}
    models = [m for m in ctx.store.list_models(ctx.campaign_id) if m.iteration_id in earlier]
    return models[-1] if models else None


def load_model(record) -> Any:
    """Load a model row's checkpoint, checking its sha256 against the database."""
    from mlip_core.checkpoint import load_committee

    model, meta = load_committee(record.checkpoint_uri)
    if meta["sha256"] != record.checkpoint_sha256:
        raise CampaignFailedError(
            f"checkpoint {record.checkpoint_uri} does not match its database sha256"
        )
    return model


def train_step(handle: CampaignHandle, iteration_id: int) -> dict[str, Any]:
    """Train the iteration's committee on every done label so far (validation excluded),
    evaluate it on the validation set, save the checkpoint and record it. Skipped when the
    iteration already has a model. Returns ``{"checkpoint": path, "val_force_rmse": ...}``."""
    ctx = open_context(handle)
    store, cfg = ctx.store, ctx.cfg
    it = next(i for i in store.list_iterations(ctx.campaign_id) if i.id == iteration_id)
    existing = _model_for(ctx, iteration_id)
    if existing is not None:
        if "val_force_rmse" not in it.validation:
            store.update_iteration(iteration_id, validation=_val_summary(existing.validation))
        return {"checkpoint": existing.checkpoint_uri, **_val_summary(existing.validation)}
    t0 = time.perf_counter()
    prev = _previous_model(ctx, it) if cfg.training.warm_start else None
    path, metrics = train_and_record(
        ctx,
        warm=load_model(prev) if prev is not None else None,
        seed=_seed(cfg.seed, "train", it.index) % (2**31),
        checkpoint=ctx.models_dir / f"iter-{it.index:03d}.pt",
        iteration=it,
    )
    store.update_iteration(iteration_id, validation=_val_summary(metrics))
    store.record_step_time(iteration_id, "train", time.perf_counter() - t0)
    return {"checkpoint": str(path), **_val_summary(metrics)}


def train_and_record(
    ctx: Context,
    *,
    warm: Any,
    seed: int,
    checkpoint: Path,
    iteration: Any = None,
    max_epochs: int | None = None,
    max_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train a committee on every done label of the campaign (validation held out and
    evaluated), save the checkpoint and record the model row (of ``iteration``, or of no
    iteration for an on-demand retrain). Shared by :func:`train_step` and the API's retrain.

    Returns ``(checkpoint path, metrics)``."""
    from mlip_core.checkpoint import save_committee
    from mlip_core.model import ModelConfig
    from mlip_core.training import TrainingConfig, evaluate_errors, train_committee

    store, cfg = ctx.store, ctx.cfg
    where = f"iteration {iteration.index}" if iteration is not None else "retrain"
    train, val, label_ids = _training_data(ctx)
    if not train:
        raise CampaignFailedError(
            f"{where}: no labelled training structures (every bootstrap label failed?)"
        )
    tc, cc = cfg.training, cfg.committee
    tcfg = TrainingConfig(
        max_epochs=max_epochs or (tc.warm_start_epochs if warm is not None else tc.max_epochs),
        max_time_s=max_time_s if max_time_s is not None else tc.max_time_s,
        batch_size=tc.batch_size,
        learning_rate=tc.warm_start_learning_rate if warm is not None else tc.learning_rate,
        patience=tc.patience,
        energy_weight=tc.energy_weight,
        val_fraction=tc.val_fraction,
        seed=seed,
    )
    mcfg = ModelConfig(
        species=ctx.species,
        cutoff=cc.cutoff,
        channels=cc.channels,
        n_layers=cc.n_layers,
        n_basis=cc.n_basis,
        readout_hidden=cc.readout_hidden,
        n_members=cc.n_members,
    )
    reporter().start("train", tcfg.max_epochs, f"{where}: training")
    with timing.compute("train"):
        result = train_committee(
            train,
            tcfg,
            model=warm,
            model_config=mcfg,
            n_members=cc.n_members,
            callback=lambda row: reporter().advance("train"),
        )
        errors = evaluate_errors(result.model, val) if val else {}
    reporter().finish("train")
    metrics = {
        "val_force_rmse": errors.get("force_rmse"),
        "val_energy_rmse": errors.get("energy_rmse"),
        "val_force_mae": errors.get("force_mae"),
        "n_train": len(train),
        "n_val": len(val),
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        "warm_start": warm is not None,
        "train_wall_s": result.wall_time_s,
        **(extra or {}),
    }
    meta: dict[str, Any] = {
        "campaign": ctx.handle.name,
        "training_label_ids": label_ids,
        "validation": {k: v for k, v in metrics.items() if v is not None},
    }
    if iteration is not None:
        meta["iteration"] = iteration.index
    sha = save_committee(result.model, checkpoint, meta)
    rec = store.record_model(
        ctx.campaign_id,
        member_count=result.model.n_members,
        checkpoint_uri=str(checkpoint),
        checkpoint_sha256=sha,
        training_label_ids=label_ids,
        iteration_id=iteration.id if iteration is not None else None,
        validation=metrics,
    )
    metrics["model_id"] = rec.id
    return checkpoint, metrics


def _val_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("val_force_rmse", "val_energy_rmse", "n_train", "epochs")
    return {k: metrics.get(k) for k in keys}


# --------------------------------------------------------------------------- explore
@dataclass(frozen=True)
class WalkerPlan:
    """One concrete walker of an iteration."""

    index: int
    config_index: int
    start: int
    seed: int


def walker_plans(ctx: Context, it) -> list[WalkerPlan]:
    """The iteration's walkers (``count`` copies of each configured walker, seeds differ)."""
    plans = []
    n_init = len(ctx.runtime["initial_structure_ids"])
    for ci, w in enumerate(ctx.cfg.exploration.walkers):
        for c in range(w.count):
            i = len(plans)
            start = w.start if w.start is not None else i % n_init
            plans.append(WalkerPlan(i, ci, start, _seed(ctx.cfg.seed, "walk", it.index, ci, c)))
    return plans


def walker_spec(cfg: CampaignConfig, walker: Any, seed: int):
    """The :class:`mlip_core.md.WalkerSpec` of one configured walker (``cfg.exploration.walkers``
    entry) under the campaign's trust window, with ``seed``."""
    from mlip_core.md import WalkerSpec

    return WalkerSpec(
        ensemble=walker.ensemble,
        temperature_K=walker.temperature,
        pressure_GPa=walker.pressure,
        timestep_fs=walker.timestep,
        n_steps=walker.steps,
        record_every=walker.record_every,
        friction=walker.friction,
        seed=seed,
        lo=cfg.trust.lo,
        hi=cfg.trust.hi,
        relative=cfg.trust.relative,
        min_distance=cfg.exploration.min_distance,
    )


def explore_one(handle: CampaignHandle, iteration_id: int, walker: int, checkpoint: str) -> dict:
    """Run one walker with the iteration's committee; store its candidate (and cut) frames as
    structures and its statistics under ``validation['walker:<i>']``. Never raises for a
    walker that blows up or crashes: that is reported in the statistics."""
    from database import Origin
    from mlip_core.calculator import CommitteeCalculator
    from mlip_core.checkpoint import load_committee
    from mlip_core.md import run_walker

    ctx = open_context(handle)
    store, cfg = ctx.store, ctx.cfg
    it = next(i for i in store.list_iterations(ctx.campaign_id) if i.id == iteration_id)
    key = f"{WALKER_PREFIX}{walker}"
    if key in it.validation:
        return it.validation[key]
    plan = walker_plans(ctx, it)[walker]
    w = cfg.exploration.walkers[plan.config_index]
    stats: dict[str, Any] = {
        "temperature": w.temperature,
        "pressure": w.pressure,
        "ensemble": w.ensemble,
        "n_frames": 0,
        "n_accurate": 0,
        "n_candidate": 0,
        "n_failed": 0,
        "devs": [],
        "candidates": [],
        "stopped_early": False,
        "stop_reason": None,
        "error": None,
    }
    try:
        model, _ = load_committee(checkpoint)
        calc = CommitteeCalculator(model, min_distance=cfg.exploration.min_distance or 0.5)
        spec = walker_spec(cfg, w, plan.seed)
        with timing.compute("md"):
            res = run_walker(ctx.initial[plan.start], calc, spec)
    except Exception as exc:  # a walker that cannot run is data, not a crash of the campaign
        stats["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        stats["n_failed"] = 1
        store.update_iteration(iteration_id, validation={key: stats})
        reporter().message(f"walker {walker} ({w.temperature:g} K) failed: {stats['error']}")
        reporter().advance("explore")
        return stats
    keep, origins, devs = [], [], []
    for frame in res.frames:
        status = frame.info.get("status")
        dev = frame.info.get("uncertainty")
        stats[f"n_{status}"] = stats.get(f"n_{status}", 0) + 1
        stats["devs"].append(None if dev is None or not np.isfinite(dev) else float(dev))
        offer = status == "candidate" or (status == "failed" and cfg.selection.label_cut_frames)
        if offer and dev is not None and np.isfinite(dev):
            keep.append(frame)
            devs.append((float(dev), float(frame.info["max_force_dev"])))
            origins.append(
                Origin(
                    walker=f"it{it.index}-w{walker}",
                    temperature=w.temperature,
                    pressure=w.pressure,
                    md_step=int(frame.info["step"]),
                    info={
                        "max_force_dev": float(frame.info["max_force_dev"]),
                        "uncertainty": float(dev),
                    },
                )
            )
    stats["n_frames"] = len(res.frames)
    stats["stopped_early"] = bool(res.stopped_early)
    stats["stop_reason"] = res.stop_reason
    stats["md_wall_s"] = res.wall_time_s
    if keep:
        sids = store.add_structures(
            keep, campaign=ctx.campaign_id, iteration_id=iteration_id, origins=origins, source="md"
        )
        # [structure id, uncertainty (trust-window units), max force deviation (eV/Å)]
        stats["candidates"] = [[int(s), d, a] for s, (d, a) in zip(sids, devs, strict=True)]
    store.update_iteration(iteration_id, validation={key: stats})
    if res.stopped_early:
        reporter().message(
            f"iteration {it.index} walker {walker} ({w.temperature:g} K) cut: {res.stop_reason}"
        )
    reporter().advance("explore")
    return stats


def explore_step(
    ctx: Context, it, checkpoint: str, walker_map: Callable[[list[int]], list[dict]] | None = None
) -> dict[str, int]:
    """Run the iteration's walkers that have not finished, then aggregate the counts."""
    walker_map = walker_map or (
        lambda idx: [explore_one(ctx.handle, it.id, i, checkpoint) for i in idx]
    )
    plans = walker_plans(ctx, it)
    it = ctx.store.get_iteration(ctx.campaign_id, it.index)
    if "explore" in it.step_timings:
        return _explore_counts(it, len(plans))
    t0 = time.perf_counter()
    todo = [p.index for p in plans if f"{WALKER_PREFIX}{p.index}" not in it.validation]
    reporter().start("explore", len(plans), f"iteration {it.index}: exploring")
    reporter().advance("explore", len(plans) - len(todo))
    if todo:
        walker_map(todo)
    reporter().finish("explore")
    it = ctx.store.get_iteration(ctx.campaign_id, it.index)
    counts = _explore_counts(it, len(plans))
    devs = [
        d
        for i in range(len(plans))
        for d in it.validation[f"{WALKER_PREFIX}{i}"]["devs"]
        if d is not None
    ]
    ctx.store.update_iteration(
        it.id,
        n_explored=counts["n_explored"],
        n_accurate=counts["n_accurate"],
        n_candidate=counts["n_candidate"],
        n_failed=counts["n_failed"],
        max_force_devs=np.asarray(devs, dtype=np.float64),
    )
    ctx.store.record_step_time(it.id, "explore", time.perf_counter() - t0)
    return counts


def _explore_counts(it, n_walkers: int) -> dict[str, int]:
    stats = [it.validation.get(f"{WALKER_PREFIX}{i}", {}) for i in range(n_walkers)]
    acc = sum(s.get("n_accurate", 0) for s in stats)
    cand = sum(s.get("n_candidate", 0) for s in stats)
    fail = sum(s.get("n_failed", 0) for s in stats)
    return {
        "n_explored": acc + cand + fail,
        "n_accurate": acc,
        "n_candidate": cand,
        "n_failed": fail,
        "n_cut": sum(bool(s.get("stopped_early")) for s in stats),
    }


# --------------------------------------------------------------------------- select
def select_step(ctx: Context, it) -> list[int]:
    """Pick at most ``selection.max_per_iteration`` candidates (and no more than the label
    budget allows), drop geometrically unfit frames, record the selections and request their
    labels. Deterministic, so a rerun after a crash picks the same structures."""
    from database import SelectionInput
    from mlip_core.selection import check_geometry, select_candidates

    store, cfg = ctx.store, ctx.cfg
    it = store.get_iteration(ctx.campaign_id, it.index)
    if "select" in it.step_timings:
        return [
            s.structure_id
            for s in store.list_selections(ctx.campaign_id, iteration_id=it.id)
            if s.reason == "candidate"
        ]
    t0 = time.perf_counter()
    cands: dict[int, float] = {}
    abs_dev: dict[int, float] = {}
    for key, stats in sorted(it.validation.items()):
        if key.startswith(WALKER_PREFIX):
            for entry in stats.get("candidates", []):
                sid, dev = int(entry[0]), float(entry[1])
                cands.setdefault(sid, dev)
                abs_dev.setdefault(sid, float(entry[2]) if len(entry) > 2 else dev)
    already = {
        s.structure_id for s in store.list_selections(ctx.campaign_id) if s.iteration_id != it.id
    }
    sids = [s for s in sorted(cands) if s not in already]
    max_n = cfg.selection.max_per_iteration
    if cfg.convergence.label_budget is not None:
        used = sum(1 for lb in _labels(ctx) if lb.iteration_id != it.id)
        max_n = max(0, min(max_n, cfg.convergence.label_budget - used))
    picked: list[int] = []
    if sids and max_n > 0:
        atoms = store.get_atoms(sids)
        ok = [i for i, a in enumerate(atoms) if not check_geometry(a)]
        sids = [sids[i] for i in ok]
        atoms = [atoms[i] for i in ok]
    if sids and max_n > 0:
        devs = np.asarray([cands[s] for s in sids])
        desc = None
        if cfg.selection.strategy == "fps" or cfg.selection.min_distance > 0:
            from mlip_core.descriptors import descriptor_matrix

            desc = descriptor_matrix(atoms, ctx.species)
        idx = select_candidates(
            np.arange(len(sids)),
            devs,
            max_n,
            cfg.selection.strategy,
            seed=_seed(cfg.seed, "select", it.index),
            descriptors=desc,
            min_distance=cfg.selection.min_distance,
        )
        picked = [sids[i] for i in idx]
        store.record_selections(
            ctx.campaign_id,
            [
                SelectionInput(
                    s, max_force_dev=abs_dev[s], reason="candidate", strategy=cfg.selection.strategy
                )
                for s in picked
            ],
            iteration_id=it.id,
        )
        store.request_labels(
            ctx.campaign_id,
            picked,
            labeler=ctx.labeler_name,
            settings_hash=ctx.settings_hash,
            settings=dict(cfg.labeler.settings),
            iteration_id=it.id,
        )
    store.record_step_time(it.id, "select", time.perf_counter() - t0)
    return picked


# --------------------------------------------------------------------------- decide
@dataclass(frozen=True)
class Decision:
    """Outcome of an iteration: continue, or stop with a campaign status and a reason."""

    stop: bool
    status: str  # running | converged | paused | cancelled
    message: str


def decide(ctx: Context, it) -> Decision:
    """Convergence: the accurate fraction >= ``accurate_ratio`` for ``patience`` consecutive
    iterations (and the validation force RMSE below ``val_force_rmse`` if set); otherwise stop
    at ``max_iterations`` or when the label budget is spent. Marks the iteration done."""
    store, conv = ctx.store, ctx.cfg.convergence
    its = [i for i in store.list_iterations(ctx.campaign_id) if i.index <= it.index]
    ratios = [(i.n_accurate / i.n_explored) if i.n_explored else 0.0 for i in its]
    recent = ratios[-conv.patience :]
    rmse = store.get_iteration(ctx.campaign_id, it.index).validation.get("val_force_rmse")
    ok_ratio = len(recent) == conv.patience and min(recent) >= conv.accurate_ratio
    ok_rmse = conv.val_force_rmse is None or (rmse is not None and rmse <= conv.val_force_rmse)
    n_labels = len(_labels(ctx))
    if ok_ratio and ok_rmse:
        d = Decision(
            True,
            "converged",
            f"converged at iteration {it.index}: accurate fraction "
            f"{', '.join(f'{r:.3f}' for r in recent)} >= {conv.accurate_ratio} for "
            f"{conv.patience} iteration(s)"
            + (f", validation force RMSE {rmse * 1000:.1f} meV/Å" if rmse else ""),
        )
    elif it.index + 1 >= conv.max_iterations:
        d = Decision(
            True, "paused", f"stopped at max_iterations={conv.max_iterations} without convergence"
        )
    elif conv.label_budget is not None and n_labels >= conv.label_budget:
        d = Decision(
            True, "paused", f"stopped: label budget {conv.label_budget} spent without convergence"
        )
    else:
        d = Decision(
            False,
            "running",
            f"iteration {it.index}: accurate fraction {ratios[-1]:.3f} < {conv.accurate_ratio}",
        )
    store.update_iteration(it.id, status="done", validation={"decision": d.message})
    if d.stop:
        store.set_campaign_status(ctx.campaign_id, d.status, d.message)
    return d


# --------------------------------------------------------------------------- loop
Runner = Callable[..., Any]


def run_campaign(
    ctx: Context,
    *,
    train: Runner | None = None,
    walker_map: Callable[[list[int], int, str], list] | None = None,
    label_submit: LabelSubmit | None = None,
    label_slots: int = 8,
    retry_failed: bool = False,
) -> Decision:
    """Run (or resume) the campaign until it stops; returns the final :class:`Decision`.

    ``train(handle, iteration_id)`` and ``walker_map(walker_indices, iteration_id, checkpoint)``
    default to in-process sequential calls; ``label_submit`` and ``label_slots`` are passed to
    :func:`label_step` (default: in-process).
    """
    store = ctx.store
    rec = store.get_campaign(ctx.campaign_id)
    if rec.status == "converged":
        return Decision(True, "converged", rec.status_message or "already converged")
    if rec.status == "cancelled":
        # cancelled by the user (API / dashboard): never revived by a run, resume or schedule
        return Decision(True, "cancelled", rec.status_message or "campaign was cancelled")
    train = train or train_step
    prepare_resume(ctx, retry_failed=retry_failed)
    store.set_campaign_status(ctx.campaign_id, "running")
    conv = ctx.cfg.convergence
    start = 0
    for i in store.list_iterations(ctx.campaign_id):
        if i.status == "done":
            start = i.index + 1
    if start >= conv.max_iterations:
        store.set_campaign_status(
            ctx.campaign_id, "paused", f"max_iterations={conv.max_iterations} already reached"
        )
        rec = store.get_campaign(ctx.campaign_id)
        return Decision(True, "paused", rec.status_message or "")
    for index in range(start, conv.max_iterations):
        it = store.start_iteration(ctx.campaign_id, index)
        if index == 0:
            seed_step(ctx, it)
            label_step(ctx, it, label_submit, label_slots)
            check_failure_rate(ctx, it)
        out = train(ctx.handle, it.id)
        checkpoint = out["checkpoint"]
        wmap = (
            (lambda idx, _it=it, _ck=checkpoint: walker_map(idx, _it.id, _ck))
            if walker_map
            else None
        )
        explore_step(ctx, it, checkpoint, wmap)
        select_step(ctx, it)
        label_step(ctx, it, label_submit, label_slots)
        check_failure_rate(ctx, it)
        decision = decide(ctx, it)
        reporter().iteration_done(summary_rows(ctx.store, ctx.campaign_id)[-1])
        if decision.stop:
            return decision
        # a pause or cancel requested while this iteration ran takes effect here
        now = store.get_campaign(ctx.campaign_id)
        if now.status in ("paused", "cancelled"):
            return Decision(
                True, now.status, now.status_message or f"{now.status} after iteration {index}"
            )
    rec = store.get_campaign(ctx.campaign_id)
    return Decision(True, rec.status, rec.status_message or "")


# --------------------------------------------------------------------------- summaries
def summary_rows(store, campaign) -> list[dict[str, Any]]:
    """Per-iteration figures for tables: labels new/total, fractions, validation errors
    (meV/Å, meV/atom), wall time per step (s)."""
    rows, total = [], 0
    for m in store.iteration_metrics(campaign):
        new = m.labels.get("done", 0)
        total += new
        n = m.n_explored
        rmse = m.validation.get("val_force_rmse")
        ermse = m.validation.get("val_energy_rmse")
        cut = sum(
            1
            for k, v in m.validation.items()
            if k.startswith(WALKER_PREFIX) and v.get("stopped_early")
        )
        rows.append(
            {
                "iteration": m.index,
                "status": m.status,
                "labels_new": new,
                "labels_total": total,
                "labels_failed": m.labels.get("failed", 0),
                "n_explored": n,
                "accurate": m.n_accurate / n if n else None,
                "candidate": m.n_candidate / n if n else None,
                "failed": m.n_failed / n if n else None,
                "cut_walkers": cut,
                "val_force_rmse_meV": rmse * 1000 if rmse is not None else None,
                "val_energy_rmse_meV": ermse * 1000 if ermse is not None else None,
                "timings": {k: round(v, 2) for k, v in m.step_timings.items()},
            }
        )
    return rows
