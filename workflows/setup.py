"""Setting a campaign up: create it from a config (or reopen it when the same config was run
before), read its initial structures once, and record the runtime facts (initial structure ids,
the labeler's settings hash) that every later run reads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import CampaignConfig, ConfigError, StructurePolicy, parse_config
from .config_model import stored_snapshot
from .context import RUNTIME_KEY, CampaignHandle, store_url, strip_runtime
from .labeler import make_labeler

__all__ = ["CampaignConflictError", "config_snapshot", "reopen_campaign", "setup_campaign"]


class CampaignConflictError(ConfigError):
    """A campaign of that name exists with a different configuration."""


def config_snapshot(cfg: CampaignConfig) -> dict[str, Any]:
    """The config as stored in the campaign row (JSON)."""
    return cfg.model_dump(mode="json")


def _normalised(stored: dict[str, Any], cfg: CampaignConfig | None = None) -> dict[str, Any]:
    """A stored config as this pesflow writes it (an older layout, e.g. ``committee:`` for
    ``model:``, compares equal to the same config written now). A snapshot stored before the
    repulsion baseline existed runs without it (:func:`stored_snapshot`); compared with a
    ``cfg`` that does not set ``model.repulsion``, it takes ``cfg``'s value (re-running the
    same file continues the campaign, which keeps running as stored)."""
    try:
        out = config_snapshot(parse_config(stored_snapshot(stored), check_files=False))
    except ConfigError:
        return stored
    section = stored.get("model", stored.get("committee"))
    predates = not (isinstance(section, dict) and "repulsion" in section)
    if cfg is not None and predates and "repulsion" not in cfg.model.model_fields_set:
        out["model"]["repulsion"] = config_snapshot(cfg)["model"]["repulsion"]
    return out


def setup_campaign(
    store, cfg: CampaignConfig, data_dir: str | Path, policy: StructurePolicy | None = None
) -> CampaignHandle:
    """Create the campaign (or reopen it when the same config was run before).

    Initial structures are read under ``policy`` (default: the local policy of ``data_dir``;
    the API passes its own). Raises :class:`CampaignConflictError` when a campaign of that
    name exists with another config. Idempotent: a run killed during set-up completes it.
    """
    snapshot = config_snapshot(cfg)
    from database import UnknownCampaignError

    try:
        rec = store.get_campaign(cfg.name)
    except UnknownCampaignError:
        rec = store.create_campaign(cfg.name, snapshot, exist_ok=True)
    if _normalised(strip_runtime(rec.config), cfg) != snapshot:
        raise CampaignConflictError(
            f"campaign {cfg.name!r} already exists with a different config; "
            f"use `pesflow resume {cfg.name}` or choose another name"
        )
    return _complete_setup(store, rec, cfg, data_dir, policy)


def _complete_setup(
    store, rec, cfg: CampaignConfig, data_dir: str | Path, policy: StructurePolicy | None = None
) -> CampaignHandle:
    if RUNTIME_KEY not in rec.config:
        from .structures import initial_structures

        if policy is None:
            policy = StructurePolicy.local(data_dir=data_dir)
        regimes: list[str] = []
        sources: list[int] = []
        atoms = initial_structures(cfg, policy, regimes=regimes, sources=sources)
        ids = store.add_structures(atoms, campaign=rec.id, source="initial")
        runtime = {
            "initial_structure_ids": ids,
            "initial_regimes": regimes,
            "initial_sources": sources,
            "settings_hash": make_labeler(cfg).settings_hash,
        }
        rec = store.update_campaign_config(rec.id, {**rec.config, RUNTIME_KEY: runtime})
    return CampaignHandle(store_url(store), rec.id, rec.name, str(Path(data_dir).absolute()))


def reopen_campaign(store, name: str | int, data_dir: str | Path) -> CampaignHandle:
    """Handle of an existing campaign (by name or id) for ``resume``."""
    rec = store.get_campaign(name)
    cfg = parse_config(
        stored_snapshot(strip_runtime(rec.config)),
        source=f"campaign {rec.name!r}",
        base_dir=data_dir,
        check_files=False,
    )
    return _complete_setup(store, rec, cfg, data_dir)
