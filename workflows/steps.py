"""The campaign's steps as plain functions (no Prefect), one module per concern:

- :mod:`workflows.context`: the campaign handle, the per-process context, stores, set-up;
- :mod:`workflows.structures`: initial, bootstrap and validation structures;
- :mod:`workflows.pick`: the seed step and the select step;
- :mod:`workflows.labelling`: the label step (each DFT calculation exactly once);
- :mod:`workflows.train`: the train step, verified checkpoints;
- :mod:`workflows.explore`: the explore step (walkers as rows);
- :mod:`workflows.loop`: the loop, the decision, the summary table;
- :mod:`workflows.lease`: one writer per campaign.

This module gathers their public names for callers that want one import.
"""

from __future__ import annotations

from .context import (
    CampaignConflictError,
    CampaignFailedError,
    CampaignHandle,
    Context,
    close_stores,
    config_snapshot,
    make_labeler,
    open_context,
    open_store,
    reopen_campaign,
    setup_campaign,
    store_url,
)
from .explore import WalkerPlan, explore_one, explore_step, walker_plans, walker_spec
from .labelling import LabelSubmit, check_failure_rate, label_one, label_step, prepare_resume
from .loop import Decision, decide, evaluate, run_campaign, summary_rows
from .pick import seed_step, select_step
from .structures import bootstrap_structures, initial_structures
from .train import load_model, train_and_record, train_step, training_data, verified_model

__all__ = [
    "CampaignConflictError",
    "CampaignFailedError",
    "CampaignHandle",
    "Context",
    "Decision",
    "LabelSubmit",
    "WalkerPlan",
    "bootstrap_structures",
    "check_failure_rate",
    "close_stores",
    "config_snapshot",
    "decide",
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
