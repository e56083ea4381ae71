"""A tiny campaign config for the cluster tests (8-atom Cu cells, short MD, 2-member committee)."""

from __future__ import annotations

import copy
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "structures": [{"generate": {"element": "Cu", "lattice_constant": 3.61, "repeat": [1, 1, 2]}}],
    "labeler": {"name": "emt"},
    "bootstrap": {"n_structures": 4, "rattle": 0.05, "strain": 0.02},
    "validation": {"n_structures": 3, "rattle": [0.03, 0.06], "strain": 0.03},
    "model": {
        "n_members": 2,
        "channels": 8,
        "n_layers": 1,
        "n_basis": 4,
        "readout_hidden": 8,
        "cutoff": 4.0,
    },
    "training": {"max_epochs": 6, "max_time_s": 20, "warm_start_epochs": 3, "patience": 10},
    "exploration": {
        "walkers": [
            {"temperature": 1200, "steps": 30, "timestep": 2.0, "record_every": 3, "count": 2}
        ]
    },
    "trust": {"lo": 0.01, "hi": 5.0},
    "selection": {"max_per_iteration": 3, "strategy": "max-first"},
    "convergence": {"accurate_ratio": 0.99, "patience": 1, "max_iterations": 2},
    "execution": {"task_runner": "threads", "max_workers": 2},
}


def tiny(**overrides: Any) -> dict[str, Any]:
    """TINY with section-level overrides (dicts merged one level deep)."""
    data = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if key == "execution" and "profile" in value:  # an API body: the profile alone
            data[key] = value
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data
