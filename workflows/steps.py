"""The campaign's steps as plain functions of ``(campaign handle, iteration id)``, each
returning a typed result, one module per step:

- :mod:`workflows.seed`: bootstrap and validation structures (:class:`SeedResult`);
- :mod:`workflows.train`: the committee, verified checkpoints (:class:`TrainResult`);
- :mod:`workflows.explore`: the explorers as rows (:class:`ExploreResult`);
- :mod:`workflows.select`: the frames to label (:class:`SelectResult`);
- :mod:`workflows.label`: each DFT calculation exactly once (:class:`LabelResult`);
- :mod:`workflows.decide`: the convergence rule (:class:`Decision`).

The sequence is :func:`workflows.loop.campaign_loop` (Prefect-bound in :mod:`workflows.flows`);
a run's resume and boundaries are :mod:`workflows.resume`; the campaign's set-up
:mod:`workflows.setup`; its stores and context :mod:`workflows.context`; one writer per campaign :mod:`workflows.lease`. This module gathers
their public names for callers that want one import.
"""

from __future__ import annotations

from database.queries import summary_rows

from .context import (
    CampaignFailedError,
    CampaignHandle,
    Context,
    close_stores,
    open_context,
    open_store,
    store_url,
)
from .decide import Decision, decide_step, evaluate
from .engine import Engine, InProcess
from .explore import ExploreResult, WalkerPlan, explore_one, explore_step, walker_plans, walker_spec
from .label import LabelResult, check_failure_rate, label_one, label_step, prepare_resume
from .labeler import make_labeler
from .loop import campaign_loop, run_campaign
from .seed import SeedResult, seed_step
from .select import SelectResult, select_step
from .setup import CampaignConflictError, config_snapshot, reopen_campaign, setup_campaign
from .structures import bootstrap_structures, initial_structures
from .train import (
    TrainResult,
    load_model,
    train_and_record,
    train_step,
    training_data,
    verified_model,
)

__all__ = [
    "CampaignConflictError",
    "CampaignFailedError",
    "CampaignHandle",
    "Context",
    "Decision",
    "Engine",
    "ExploreResult",
    "InProcess",
    "LabelResult",
    "SeedResult",
    "SelectResult",
    "TrainResult",
    "WalkerPlan",
    "bootstrap_structures",
    "campaign_loop",
    "check_failure_rate",
    "close_stores",
    "config_snapshot",
    "decide_step",
    "evaluate",
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
    "store_url",
    "summary_rows",
    "train_and_record",
    "train_step",
    "training_data",
    "verified_model",
    "walker_plans",
    "walker_spec",
]
